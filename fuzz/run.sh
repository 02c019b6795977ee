#!/usr/bin/env bash
# Builds every fuzz target and runs each for a bounded time; prints, per target, the inputs
# executed and the time taken; exits non-zero if any target crashed (or failed to build).
#
#   FUZZ_SECONDS=30        time per target (default 30)
#   FUZZ_TARGETS="a b"     which targets (default: all of them, in the order below)
#   FUZZ_SANITIZER=address sanitizer for cargo fuzz -s (address, none, ...; default address)
#   FUZZ_TOLERATE=...      invariants already reported, not to crash on (see fuzz/README.md)
#   FUZZ_ARGS="..."        extra libFuzzer flags, e.g. "-max_len=16384"
#
# Stable Rust only: cargo fuzz needs nightly flags (-Zsanitizer, ...), unlocked here with
# RUSTC_BOOTSTRAP=1. One libFuzzer process at a time, nice'd: one core.
# New inputs a run finds go to fuzz/work/<target>/ (not versioned); the seeds in
# fuzz/corpus/<target>/ are only read. Crashes go to fuzz/artifacts/<target>/.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

seconds="${FUZZ_SECONDS:-30}"
targets="${FUZZ_TARGETS:-token jwks config rules headers extract rsa_diff}"
sanitizer="${FUZZ_SANITIZER:-address}"
extra="${FUZZ_ARGS:-}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: installing it (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked || exit 2
fi
echo "$(cargo fuzz --version), $(rustc --version), sanitizer=$sanitizer, ${seconds}s per target"

build_log="$here/work/build.log"
mkdir -p "$here/work"
# shellcheck disable=SC2086
if ! nice -n 10 cargo fuzz build -s "$sanitizer" >"$build_log" 2>&1; then
    tail -n 40 "$build_log"
    echo "fuzz: build failed (full log: $build_log)"
    exit 2
fi

failed=()
summary=()
for t in $targets; do
    mkdir -p "work/$t" "artifacts/$t"
    log="work/$t.log"
    before=$(find "artifacts/$t" -type f | wc -l)
    start=$(date +%s)
    # -timeout: one input taking 10 s is a finding too. No -jobs/-workers: those fork a child
    # that logs to fuzz-N.log; a single process is the same single core, and simpler.
    # shellcheck disable=SC2086
    nice -n 10 cargo fuzz run -s "$sanitizer" "$t" "work/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 $extra \
        >"$log" 2>&1
    rc=$?
    wall=$(( $(date +%s) - start ))
    runs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    done_line=$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1)
    if [[ -z "$runs" && -n "$done_line" ]]; then
        runs=$(awk '{print $2}' <<<"$done_line")
    fi
    secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' <<<"$done_line")
    cov=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | sed -n 's/.*cov: \([0-9]*\) ft: \([0-9]*\) corp: \([0-9]*\).*/cov=\1 ft=\2 corpus=\3/p')
    after=$(find "artifacts/$t" -type f | wc -l)
    if [[ $rc -ne 0 || $after -gt $before ]]; then
        status="CRASH"
        failed+=("$t")
    else
        status="ok"
    fi
    line=$(printf '%-8s %-5s runs=%-10s time=%ss (wall %ss) %s' \
        "$t" "$status" "${runs:-?}" "${secs:-?}" "$wall" "$cov")
    summary+=("$line")
    echo "$line"
    if [[ $status == CRASH ]]; then
        { grep -m1 -A2 "panicked at" "$log" | grep -v "^stack backtrace"
          grep -m1 -E "ERROR: (libFuzzer|AddressSanitizer)" "$log"
          grep -m1 "Test unit written to" "$log"; } | sed 's/^/    /'
        echo "    log: fuzz/$log; reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run $t <artifact> (in fuzz/)"
    fi
done

echo
echo "fuzz summary (${seconds}s per target):"
printf '  %s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz: ${#failed[@]} target(s) crashed: ${failed[*]}"
    exit 1
fi
echo "fuzz: no crash"
