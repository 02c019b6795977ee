"""Fixtures for the end-to-end tests: real Envoy loading the built filter, moto as Cognito,
an echo upstream and a JWKS server the tests control.

Expensive things are shared: moto, the user pool, the test key and the servers live for the
session; `authorizer` (Envoy with the standard configuration) lives for a test module.
Tests that need their own configuration or a fresh process start one with `start_envoy`.
Every process is stopped by a finalizer; when a test fails, its report carries the Envoy
log lines written while it ran (the filter logs its reasons at debug level)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO = TESTS_DIR.parent
sys.path.insert(0, str(TESTS_DIR))

from support import tokens as tk  # noqa: E402
from support.authorizer_config import (  # noqa: E402
    MOTO_CLUSTER,
    PASSWORD,
    TEST_CLUSTER,
    TEST_KID,
    standard_config,
)
from support.envoy import Envoy, authorizer_bootstrap  # noqa: E402
from support.jwks_server import JwksServer  # noqa: E402
from support.moto_pool import CognitoPool, MotoServer, Tokens, create_pool  # noqa: E402
from support.upstream import EchoUpstream  # noqa: E402


def pytest_configure(config):
    """SIGTERM (a CI timeout, `timeout`) ends the run like Ctrl-C: fixtures' finalizers run
    and stop every process the tests started."""

    def interrupt(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    config.addinivalue_line(
        "markers",
        "all_algorithms: every Envoy of the module loads the all-algorithms build (see wasm_path)",
    )


LOG_MARKS = pytest.StashKey[dict]()
_LIVE_ENVOYS: list[Envoy] = []


# --- binaries ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def envoy_bin() -> str:
    path = os.environ.get("ENVOY_BIN") or str(REPO / ".venv" / "bin" / "envoy")
    if not os.access(path, os.X_OK):
        pytest.fail(f"no Envoy binary at {path} (set ENVOY_BIN, or run `make venv`)")
    return path


@pytest.fixture(scope="session")
def default_wasm_path() -> str:
    path = os.environ.get("WASM") or str(
        REPO / "target" / "wasm32-wasip1" / "release" / "cognito_authorizer.wasm"
    )
    if not os.path.isfile(path):
        pytest.fail(f"no filter at {path} (set WASM, or run `make build`)")
    return os.path.abspath(path)


@pytest.fixture(scope="session")
def all_algorithms_wasm_path() -> str:
    """The module built with every algorithm (cargo feature `all-algorithms`, `make
    build-all-algorithms`)."""
    path = os.environ.get("WASM_ALL_ALGORITHMS") or str(
        REPO / "target" / "all-algorithms" / "wasm32-wasip1" / "release" / "cognito_authorizer.wasm"
    )
    if not os.path.isfile(path):
        pytest.fail(
            f"no all-algorithms build at {path} (set WASM_ALL_ALGORITHMS, or run "
            "`make build-all-algorithms`)"
        )
    return os.path.abspath(path)


@pytest.fixture(scope="session")
def fault_wasm_path() -> str:
    """The module built with the test-only cargo feature `fault-injection` (`make
    build-fault`): the hooks of src/filter/fault.rs (a panic, a signature probe)."""
    path = os.environ.get("WASM_FAULT") or str(
        REPO / "target" / "fault" / "wasm32-wasip1" / "release" / "cognito_authorizer.wasm"
    )
    if not os.path.isfile(path):
        pytest.fail(f"no fault-injection build at {path} (set WASM_FAULT, or `make build-fault`)")
    return os.path.abspath(path)


@pytest.fixture(scope="session")
def noop_wasm_path() -> str:
    """The filter that does nothing (tests/noop-filter, `make build-noop`): the baseline of
    tests that compare what a change costs with what it costs any Wasm filter."""
    path = os.environ.get("NOOP_WASM") or str(
        REPO / "target" / "noop-filter" / "wasm32-wasip1" / "release" / "noop_filter.wasm"
    )
    if not os.path.isfile(path):
        pytest.fail(f"no no-op filter at {path} (set NOOP_WASM, or run `make build-noop`)")
    return os.path.abspath(path)


@pytest.fixture(scope="module")
def wasm_path(request) -> str:
    """The filter every Envoy of a test module loads: the default build (RSA only), or the
    all-algorithms build for modules marked `pytestmark = pytest.mark.all_algorithms` —
    those that exercise ES256/ES384/EdDSA (test_algorithm_features.py tests what the
    default build does with them)."""
    if request.node.get_closest_marker("all_algorithms"):
        return request.getfixturevalue("all_algorithms_wasm_path")
    return request.getfixturevalue("default_wasm_path")


# --- session-wide services ---------------------------------------------------------------


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cognito(moto) -> CognitoPool:
    """moto's pool with app client `client_id` (the one the filter accepts); alice is in
    group admins, bob in no group."""
    return create_pool(moto.endpoint, {"alice": (PASSWORD, ["admins"]), "bob": (PASSWORD, [])})


@pytest.fixture(scope="session")
def other_client_id(cognito) -> str:
    """A second app client of the same pool, which the filter is not configured to accept."""
    return cognito.add_client("not-configured")


@pytest.fixture(scope="session")
def alice(cognito) -> Tokens:
    """alice's tokens from moto (valid for an hour)."""
    return cognito.login("alice")


@pytest.fixture(scope="session")
def signing_key() -> tk.SigningKey:
    return tk.SigningKey.generate(TEST_KID)


@pytest.fixture(scope="session")
def jwks(signing_key):
    server = JwksServer(tk.jwks(signing_key))
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _healthy_jwks(request, signing_key):
    """Every test starts with the JWKS server serving the test key promptly, and counts
    the fetches made during the test only."""
    if "jwks" in request.fixturenames:
        request.getfixturevalue("jwks").reset(tk.jwks(signing_key))


@pytest.fixture(scope="session")
def upstream():
    server = EchoUpstream()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_upstream_record(request):
    """`upstream.requests` holds what reached the upstream during this test only."""
    if "upstream" in request.fixturenames:
        request.getfixturevalue("upstream").clear()


# --- Envoy -------------------------------------------------------------------------------


def _launch(envoy_bin, wasm_path, filter_config, upstream, clusters, workdir, name) -> Envoy:
    envoy = Envoy(
        envoy_bin,
        authorizer_bootstrap(wasm_path, filter_config, upstream.port, clusters),
        workdir,
        name,
    )
    _LIVE_ENVOYS.append(envoy)
    return envoy


def _stop(envoy: Envoy) -> None:
    envoy.stop()
    if envoy in _LIVE_ENVOYS:
        _LIVE_ENVOYS.remove(envoy)


@pytest.fixture(scope="module")
def authorizer(envoy_bin, wasm_path, cognito, moto, jwks, upstream, tmp_path_factory) -> Envoy:
    """Envoy with `standard_config`, shared by the tests of one module."""
    envoy = _launch(
        envoy_bin,
        wasm_path,
        standard_config(cognito.pool_id, cognito.client_id),
        upstream,
        {MOTO_CLUSTER: moto.port, TEST_CLUSTER: jwks.port},
        tmp_path_factory.mktemp("envoy"),
        "authorizer",
    )
    try:
        envoy.wait_ready()
        yield envoy
    finally:
        _stop(envoy)


@pytest.fixture
def start_envoy(envoy_bin, wasm_path, upstream, jwks, tmp_path):
    """start_envoy(filter_config, clusters=None, wait=True) → Envoy, stopped after the test.

    `clusters` defaults to {"test_jwks": <the JWKS server>}."""
    started: list[Envoy] = []

    def start(filter_config, clusters: dict[str, int] | None = None, wait: bool = True) -> Envoy:
        envoy = _launch(
            envoy_bin,
            wasm_path,
            filter_config,
            upstream,
            clusters if clusters is not None else {TEST_CLUSTER: jwks.port},
            tmp_path / f"envoy{len(started)}",
            f"envoy{len(started)}",
        )
        started.append(envoy)
        return envoy.wait_ready() if wait else envoy

    yield start
    for envoy in started:
        _stop(envoy)


# --- Envoy log excerpts in failure reports -----------------------------------------------


@pytest.fixture(autouse=True)
def _mark_envoy_logs(request):
    """Remembers where each running Envoy's log stood when the test began."""
    request.node.stash[LOG_MARKS] = {id(e): e.log_size() for e in _LIVE_ENVOYS}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    marks = item.stash.get(LOG_MARKS, {})
    if _LIVE_ENVOYS:
        time.sleep(0.2)  # let Envoy flush its last lines (--file-flush-interval-msec 50)
    for envoy in _LIVE_ENVOYS:
        lines = [
            line
            for line in envoy.log_since(marks.get(id(envoy), 0)).splitlines()
            if "][info][main]" not in line  # start-up inventory: extensions, header maps
        ]
        excerpt = "\n".join(lines[-150:])
        title = f"Envoy {envoy.name} log during the test ({envoy.log_path})"
        report.sections.append((title, excerpt))


# --- one Envoy per module with a configuration of the module's own -------------------------


@pytest.fixture(scope="module")
def module_envoys(envoy_bin, wasm_path, upstream, tmp_path_factory):
    """start(filter_config, clusters, hcm_overrides=None, access_log=None, name=None) → a
    ready Envoy that lives until the end of the module (for modules that need their own
    filter configuration or HCM settings, without paying one Envoy per test)."""
    started: list[Envoy] = []
    workdir = tmp_path_factory.mktemp("module-envoys")

    def start(
        filter_config,
        clusters: dict[str, int],
        hcm_overrides: dict | None = None,
        access_log: list[dict] | None = None,
        name: str | None = None,
    ) -> Envoy:
        name = name or f"envoy{len(started)}"
        envoy = Envoy(
            envoy_bin,
            authorizer_bootstrap(
                wasm_path,
                filter_config,
                upstream.port,
                clusters,
                hcm_overrides=hcm_overrides,
                access_log=access_log,
            ),
            workdir,
            name,
        )
        _LIVE_ENVOYS.append(envoy)
        started.append(envoy)
        return envoy.wait_ready()

    yield start
    for envoy in started:
        _stop(envoy)


# --- whole bootstraps built by a test module ----------------------------------------------


@pytest.fixture(scope="module")
def bootstrap_envoys(envoy_bin, tmp_path_factory):
    """start(bootstrap, name=None, concurrency=2, wait=True, extra_args=(), hot_restart=None)
    → an Envoy running a whole
    bootstrap the test module built (several listeners, jwt_authn next to the filter,
    another failure_policy, the fault-injection module...). Its log goes into failure
    reports like the others'; it is stopped at the end of the module (or by `_stop`)."""
    started: list[Envoy] = []
    workdir = tmp_path_factory.mktemp("bootstrap-envoys")

    def start(bootstrap: dict, name: str | None = None, concurrency: int = 2,
              wait: bool = True, extra_args: tuple[str, ...] = (),
              hot_restart: tuple[int, int] | None = None) -> Envoy:  # fmt: skip
        name = name or f"envoy{len(started)}"
        envoy = Envoy(envoy_bin, bootstrap, workdir, name, concurrency=concurrency,
                      extra_args=extra_args, hot_restart=hot_restart)  # fmt: skip
        _LIVE_ENVOYS.append(envoy)
        started.append(envoy)
        return envoy.wait_ready() if wait else envoy

    start.stop = _stop  # type: ignore[attr-defined]
    yield start
    for envoy in started:
        _stop(envoy)
