#!/usr/bin/env bash
# Builds the rig's modules (README.md here): cargo for wasm32-wasip1, then binaryen's wasm-opt
# with the Makefile's flags, into target/rsa-compare-<variant>/rsa_compare.wasm. Run from the
# repository root; `make build` installs wasm-opt if it is missing.
#   bash tests/rsa-compare/build.sh [variant ...]   (default: all five)
# Variants: none (no feature), digest, own, rustcrypto, rustcrypto32 (rustcrypto with
# crypto-bigint forced to 32-bit limbs: RUSTFLAGS='--cfg cpubits="32"').
set -euo pipefail
WASM_OPT=$(ls -d target/tools/binaryen-*/node_modules/.bin/wasm-opt | tail -1)
# The Makefile's WASM_OPT_FLAGS.
FLAGS=(-O1 --enable-bulk-memory --enable-sign-ext --enable-mutable-globals
  --enable-nontrapping-float-to-int --enable-multivalue --enable-reference-types)
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(none digest own rustcrypto rustcrypto32)
for v in "${variants[@]}"; do
  dir=target/rsa-compare-$v
  case $v in
    none) features=() ;;
    rustcrypto32) features=(--features rustcrypto) ;;
    *) features=(--features "$v") ;;
  esac
  if [ "$v" = rustcrypto32 ]; then export RUSTFLAGS='--cfg cpubits="32"'; else unset RUSTFLAGS; fi
  nice -n 5 cargo build --release --target wasm32-wasip1 --manifest-path tests/rsa-compare/Cargo.toml \
    --target-dir "$dir" ${features[@]+"${features[@]}"}
  "$WASM_OPT" "${FLAGS[@]}" "$dir/wasm32-wasip1/release/deps/rsa_compare.wasm" -o "$dir/rsa_compare.wasm"
  echo "built $dir/rsa_compare.wasm: $(stat -c %s "$dir/rsa_compare.wasm") bytes"
done
