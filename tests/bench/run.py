"""`make bench`: Envoy without auth, with a no-op Wasm filter, with its native jwt_authn (with
and without cache) and with cognito-authorizer, side by side on this machine (README "Benchmarks").

    ENVOY_BIN=<envoy> WASM=<abs path of cognito_authorizer.wasm> .venv/bin/python tests/bench/run.py

Environment (all optional):
    BENCH_QUICK=1          smoke test: 1 repetition of 2 s, 1 cold-start sample
    BENCH_REPEAT=3         repetitions of every (scenario, configuration) run
    BENCH_SECONDS=5        seconds per wrk run (whole seconds)
    BENCH_CONNECTIONS=16   wrk connections (one wrk thread)
    BENCH_WARMUP=2         seconds of warm-up traffic per Envoy before measuring
    BENCH_COLD_SAMPLES=3   cold starts per configuration
    BENCH_FRESH_TOKENS     fresh tokens minted for scenario c (default 12,000 per second of run)
    BENCH_SCENARIOS=abcd   which scenarios to run (e.g. "c" while investigating one; "-": none)
    BENCH_VARIANTS         experimental configurations beside the others in a and b:
                           "label=module.wasm;label=|{\"filter_state\": []}" (tests/bench/envoys.py)
    BENCH_WASM_RSA=1       also run the authorizer with "signature_backend": "wasm" (c, d and
                           the verification cost only: elsewhere it is the same cache-hit code)
    NOOP_WASM              the no-op filter (default target/noop-filter/.../noop_filter.wasm,
                           built here when missing)
    WRK                    wrk binary (default: wrk on PATH)

One Envoy per configuration runs for the whole bench; runs are interleaved (each repetition
visits every configuration, starting one further along each time) so that a slow moment of
the machine hits all configurations alike. Ratios are "paired": the median over repetitions
of the ratio of two configurations' throughput within one repetition.
Results: stdout, target/bench/results.md (Markdown) and target/bench/results.json (raw runs).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import envoys as ev  # noqa: E402
import tokens as tk  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "target" / "bench"
LUA = Path(__file__).resolve().parent / "tokens.lua"


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
REPEAT = max(1, env_int("BENCH_REPEAT", 1 if QUICK else 3))
SECONDS = max(1, env_int("BENCH_SECONDS", 2 if QUICK else 5))
CONNECTIONS = max(1, env_int("BENCH_CONNECTIONS", 16))
WARMUP = max(0, env_int("BENCH_WARMUP", 1 if QUICK else 2))
COLD_SAMPLES = max(1, env_int("BENCH_COLD_SAMPLES", 1 if QUICK else 3))
MICRO_SECONDS = min(SECONDS, 2)
# Fresh tokens must outnumber what the fastest verifying Envoy answers in one run, so that no
# token is seen twice by an Envoy within a run (each configuration walks the list on from where
# its previous run stopped; a token comes back only after the whole list, far beyond any cache).
FRESH_TOKENS = env_int("BENCH_FRESH_TOKENS", 12000 * SECONDS)
SCENARIO_KEYS = os.environ.get("BENCH_SCENARIOS", "").strip() or "abcd"  # "-": none
# Caches are filled before b and d (steady state): passes over the 1,000 tokens until one pass
# has at most this share of misses, within CACHE_FILL_MAX_S. Each pass opens new connections,
# which the kernel spreads over the workers anew: a nearly miss-free pass means every worker's
# cache holds (nearly) every token.
CACHE_FILL_MAX_MISS = 0.001
CACHE_FILL_MAX_S = 30
WASM_RSA = os.environ.get("BENCH_WASM_RSA", "1") not in ("", "0")

ENVOY_BIN = os.environ.get("ENVOY_BIN") or str(ROOT / ".venv" / "bin" / "envoy")
WASM = os.environ.get("WASM") or str(ROOT / "target/wasm32-wasip1/release/cognito_authorizer.wasm")
NOOP_WASM = os.environ.get("NOOP_WASM") or str(
    ROOT / "target/noop-filter/wasm32-wasip1/release/noop_filter.wasm"
)
WRK = os.environ.get("WRK") or shutil.which("wrk") or "wrk"


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    tokens: Path
    fresh: bool  # walk the fresh-token list on from run to run
    refused_share: float = 0.0  # of the requests, by an authenticating configuration


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# wrk


def wrk_run(port: int, token_file: Path, first: int, seconds: int, connections: int) -> dict:
    cmd = [
        WRK, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
        "-s", str(LUA), f"http://127.0.0.1:{port}/", "--", str(token_file), str(first),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            r = json.loads(line[len("BENCH_JSON ") :])
            r["rps"] = r["requests"] / (r["duration_us"] / 1e6) if r["duration_us"] else 0.0
            r["socket_errors"] = (
                r["connect_errors"] + r["read_errors"] + r["write_errors"] + r["timeouts"]
            )
            return r
    raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")


# --------------------------------------------------------------------------------------------
# Checks before measuring: the bench must never measure an error path by mistake.

STAT_KEYS = ("cognito_authorizer.", "jwt_authn.")


def check_answers(e: ev.Envoy, valid: str, invalid: str) -> None:
    cases = [
        ("valid token", {"authorization": f"Bearer {valid}"}, 200),
        ("no token", {}, 401 if e.cfg.authenticates else 200),
        ("bad signature", {"authorization": f"Bearer {invalid}"}, 401 if e.cfg.authenticates else 200),
    ]
    for name, headers, want in cases:
        status, body = ev.http_get(e.port, "/", headers)
        if status != want:
            raise RuntimeError(f"{e.cfg.label}: {name} answered {status} {body[:200]!r}, want {want}")


def check_run(cfg: ev.BenchConfig, refused_share: float, r: dict, connections: int) -> str | None:
    """None when the run answered as it should, else what went wrong. `refused_share`: the
    share of requests an authenticating configuration must refuse (0, 0.5 or 1)."""
    if r["requests"] == 0:
        return "no request answered"
    if r["socket_errors"]:
        return f"{r['socket_errors']} socket errors/timeouts"
    share = r["non2xx"] / r["requests"]
    want = refused_share if cfg.authenticates else 0.0
    # Alternating tokens: exact but for the requests in flight when wrk stops.
    if abs(share - want) > (0.01 + connections / r["requests"] if 0 < want < 1 else 0):
        return f"{share:.1%} non-2xx answers ({r['non2xx']}), want {want:.0%}"
    return None


def cache_counts(stats: dict) -> tuple[int, int]:
    """(hits, misses) of the authorizer's or jwt_authn's token cache."""
    hits = sum(v for k, v in stats.items() if k.endswith(("cognito_authorizer.cache_hit", "jwt_authn.jwt_cache_hit")))
    misses = sum(v for k, v in stats.items() if k.endswith(("cognito_authorizer.cache_miss", "jwt_authn.jwt_cache_miss")))
    return hits, misses


def fill_cache(e: ev.Envoy, token_file: Path) -> str:
    """Passes of 1 s over `token_file` until one is (almost) all cache hits: every worker's
    cache then holds every token, whichever connection (worker) a token arrives on."""
    started = time.monotonic()
    passes = 0
    while True:
        before = cache_counts(e.stats(STAT_KEYS))
        wrk_run(e.port, token_file, 0, 1, CONNECTIONS)
        passes += 1
        hits, misses = (a - b for a, b in zip(cache_counts(e.stats(STAT_KEYS)), before))
        share = misses / max(1, hits + misses)
        if share <= CACHE_FILL_MAX_MISS or time.monotonic() - started > CACHE_FILL_MAX_S:
            return f"{passes} pass(es), last {share:.1%} misses"


def stat_delta(before: dict, after: dict) -> dict:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}


# --------------------------------------------------------------------------------------------
# Reporting


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_rps(x) -> str:
    return "—" if x is None else f"{x:,.0f}"


def fmt_ms(us) -> str:
    return "—" if us is None else f"{us / 1000:.2f}"


def fmt_ratio(x) -> str:
    return "—" if x is None else f"{x:.2f}×"


def paired_ratio(runs: dict, cfg: str, ref: str) -> float | None:
    """Median over repetitions of rps(cfg) / rps(ref) within the same repetition."""
    if cfg == ref:
        return None
    ratios = [
        a["rps"] / b["rps"]
        for a, b in zip(runs.get(cfg, []), runs.get(ref, []))
        if a and b and b["rps"]
    ]
    return median(ratios)


def machine_facts() -> dict:
    def first_line(cmd):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    envoy_version = first_line([ENVOY_BIN, "--version"]).split("version:")[-1].strip()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "envoy": envoy_version,
        "wrk": first_line([WRK, "-v"]).split(" [")[0],
        "loadavg_start": os.getloadavg()[0],
    }


def render(results: dict) -> str:
    facts = results["facts"]
    cfgs = [ev.BY_KEY[k] for k in results["configs"]]
    scenarios = results["scenarios"]
    L: list[str] = []
    L.append("## Benchmark: cognito-authorizer vs Envoy jwt_authn")
    L.append("")
    L.append(
        f"{facts['date']}; {facts['cores']} cores ({facts['cpu']}), Linux {facts['kernel']}; "
        f"Envoy {facts['envoy']} (`--concurrency 2`); {facts['wrk']}, 1 thread, "
        f"{results['connections']} connections, {results['seconds']} s per run, "
        f"{results['repeat']} repetition(s), configurations interleaved. "
        f"wrk and Envoy share the same {facts['cores']} cores, so absolute numbers are "
        f"lower than on a dedicated load generator; compare rows, not machines. "
        f"Load average at start {facts['loadavg_start']:.2f}, at end {facts.get('loadavg_end', 0):.2f}."
    )
    L.append("")
    L.append(
        "Every configuration is the same listener and `direct_response` route (200, 3-byte "
        "body); only the HTTP filter chain differs. Tokens: Cognito-shaped RS256 access "
        "tokens (RSA-2048)."
    )
    L.append("")
    # Summary: req/s per scenario x configuration.
    L.append("### Throughput (median req/s)")
    L.append("")
    L.append("| scenario | " + " | ".join(c.label for c in cfgs) + " |")
    L.append("|---|" + "---:|" * len(cfgs))
    for sc in scenarios:
        runs = results["runs"][sc["key"]]
        row = [fmt_rps(median([r["rps"] for r in runs.get(c.key, []) if r])) for c in cfgs]
        L.append(f"| {sc['key']}. {sc['title']} | " + " | ".join(row) + " |")
    L.append("")
    skipped = [c for c in cfgs if any(sc["key"] not in c.scenarios for sc in scenarios)]
    if skipped:
        why = {
            "authorizer_revocations": "where requests are cache hits and the check is the largest share",
            "authorizer_wasm": "where signatures are checked: a and b run the default's cache-hit code",
            "ceiling_headers": "the floor for cache hits",
            "ceiling_verify": "the floor for a fresh token with host crypto",
        }
        L.append("—: not run. " + "; ".join(
            f"{c.label}: only in {', '.join(c.scenarios)} ({why.get(c.key, 'by design')})" for c in skipped
        ) + ".")  # fmt: skip
        L.append("")
    refs = [("noauth", "vs no auth"), ("noop", "vs no-op wasm"), ("jwt", "vs jwt_authn"), ("jwtcache", "vs jwt_authn+cache"),
            ("authorizer", "vs cognito-authorizer"), ("ceiling_headers", "vs header-read ceiling"),
            ("ceiling_verify", "vs verify ceiling")]
    for sc in scenarios:
        runs = results["runs"][sc["key"]]
        L.append(f"### {sc['key']}. {sc['title']}")
        L.append("")
        L.append(
            "| configuration | req/s | p50 ms | p99 ms | non-2xx | "
            + " | ".join(name for _, name in refs)
            + " |"
        )
        L.append("|---|---:|---:|---:|---:|" + "---:|" * len(refs))
        for c in cfgs:
            rs = [r for r in runs.get(c.key, []) if r]
            if not rs:
                continue
            non2xx = sum(r["non2xx"] for r in rs) / max(1, sum(r["requests"] for r in rs))
            ratios = [fmt_ratio(paired_ratio(runs, c.key, ref)) for ref, _ in refs]
            L.append(
                f"| {c.label} | {fmt_rps(median([r['rps'] for r in rs]))} | "
                f"{fmt_ms(median([r['p50_us'] for r in rs]))} | {fmt_ms(median([r['p99_us'] for r in rs]))} | "
                f"{non2xx:.1%} | " + " | ".join(ratios) + " |"
            )
        L.append("")
    L.append(
        "Ratios are throughput ratios (row ÷ column configuration, > 1 is faster), paired: "
        "the median over repetitions of the ratio within one repetition."
    )
    L.append("")
    # Micro-benchmark.
    m = results.get("micro")
    if m:
        L.append("### Cost of one verification (derived)")
        L.append("")
        L.append(
            f"Derived, not measured directly: every request verified (valid: scenario c's fresh "
            f"tokens; bad signature: 1,000 distinct tokens with a flipped signature bit, never "
            f"cached) with 1 connection for {m['seconds']} s — one request at a time, so one "
            f"worker and no queueing — minus the same run on the configuration without "
            f"verification. It is the whole per-request cost of a cache miss (decode, JSON, "
            f"RS256, claim checks, cache insert), dominated by RS256. Median over "
            f"{len(m['reps'])} repetition(s)."
        )
        L.append("")
        L.append("| verification | p50 verifying | p50 baseline | µs per verification (p50 difference) | µs per verification (1/throughput difference) |")
        L.append("|---|---:|---:|---:|---:|")
        for row in m["summary"]:
            L.append(
                f"| {row['label']} | {row['p50_us']:.0f} µs | {row['base_p50_us']:.0f} µs | "
                f"**{row['p50_diff_us']:.0f}** | {row['rate_diff_us']:.0f} |"
            )
        L.append("")
    # Cold start, size, memory.
    L.append("### Cold start, module size, memory")
    L.append("")
    L.append(
        "Cold start: from exec of Envoy to the first 200 for a request with a valid token "
        f"(median of {results['cold_samples']}; includes compiling the Wasm module and, for the "
        "authorizer, fetching the JWKS from a local server). RSS: Envoy's VmRSS, idle after "
        "start, and after the 1,000-token scenario b."
    )
    L.append("")
    L.append("| configuration | listener up ms | cold start ms | module bytes | RSS idle MiB | RSS after b MiB |")
    L.append("|---|---:|---:|---:|---:|---:|")
    for c in cfgs:
        listening = median(results["cold_listening_s"].get(c.key, []))
        cold = median(results["cold_start_s"].get(c.key, []))
        size = results["module_bytes"].get(c.key)
        idle = results["rss_idle_kib"].get(c.key)
        after = results["rss_after_b_kib"].get(c.key)
        L.append(
            f"| {c.label} | {'—' if listening is None else f'{listening * 1000:.0f}'} | "
            f"{'—' if cold is None else f'{cold * 1000:.0f}'} | "
            f"{'—' if size is None else f'{size:,}'} | "
            f"{'—' if idle is None else f'{idle / 1024:.1f}'} | "
            f"{'—' if after is None else f'{after / 1024:.1f}'} |"
        )
    L.append("")
    # Filter counters: evidence of what each filter did.
    if results.get("counters"):
        L.append("### Filter counters over all runs (sanity check)")
        L.append("")
        L.append("| scenario | configuration | counters (delta) |")
        L.append("|---|---|---|")
        for sc in scenarios:
            for c in cfgs:
                d = results["counters"].get(sc["key"], {}).get(c.key)
                if d:
                    text = ", ".join(f"{short_stat(k)} {v:,}" for k, v in sorted(d.items()))
                    L.append(f"| {sc['key']} | {c.label} | {text} |")
        L.append("")
        cold = results.get("jwks_fetches_cold") or []
        n = sum(1 for k in results["configs"] if k.startswith("authorizer"))
        L.append(
            f"JWKS fetches served by the local JWKS server: {results.get('jwks_fetches_bench', 0)} "
            f"during the bench for {n} authorizer Envoy(s) (each: main thread + 2 worker VMs; "
            f"README 'Keys' wants one per process); {'/'.join(map(str, cold)) or '—'} for each "
            f"authorizer cold start."
        )
        L.append("")
    L.append("### Method")
    L.append("")
    for line in method_notes(results):
        L.append(f"- {line}")
    L.append("")
    if results["problems"]:
        L.append("### Problems")
        L.append("")
        for p in results["problems"]:
            L.append(f"- {p}")
        L.append("")
    return "\n".join(L)


def method_notes(results: dict) -> list[str]:
    notes = [
        "One Envoy per configuration (`--concurrency 2`), all started before measuring and each "
        "checked first: valid token → 200, no token and bad signature → 401 where it "
        "authenticates. Each run is checked too: no socket error, no non-2xx answer except the "
        "bad-signature half of d (which must be 50% ± in-flight requests).",
        f"Each Envoy gets {results['warmup']} s of warm-up traffic (the d token mix) before the "
        "first run, so that V8 has tiered up the Wasm code (Liftoff → TurboFan) before anything "
        "is measured.",
        "b and d run with warm caches: before them, 1-s passes over the 1,000 valid tokens "
        "continue until one pass is ≥ 99.9% cache hits (authorizer and jwt_authn+cache).",
        f"c walks a list of {results['fresh_tokens']:,} pre-minted tokens, each configuration "
        "continuing where its previous run stopped, so no token is seen twice by an Envoy; the "
        "counters below show 0 cache hits.",
        "d: the bad-signature tokens are well-formed, `kid` known, one bit flipped in the "
        "middle of the signature: refused only by a full RSA verification, never cached.",
        "wrk (1 thread) and Envoy (2 workers) share the machine's cores: the load generator "
        "takes part of the CPU the Envoys could use, the same part for every configuration.",
    ]
    for key, line in results.get("signature_backends", {}).items():
        notes.append(f"{ev.BY_KEY[key].label}: the filter logged at start \"signatures: {line}\".")
    return notes + results.get("notes", [])


def signature_backend_line(e: ev.Envoy) -> str | None:
    """The authorizer's start-up line naming who checks signatures, if it logs one."""
    try:
        for line in e.log_path.read_text(errors="replace").splitlines():
            if "signatures:" in line:
                return line.split("signatures:", 1)[1].strip()
    except OSError:
        pass
    return None


def short_stat(name: str) -> str:
    for marker in STAT_KEYS:
        if marker in name:
            return name[name.index(marker) :]
    return name


# --------------------------------------------------------------------------------------------


def ensure_noop_wasm() -> None:
    if Path(NOOP_WASM).exists():
        return
    log("building the no-op filter (tests/noop-filter)")
    subprocess.run(
        [
            "cargo", "build", "--release", "--target", "wasm32-wasip1",
            "--manifest-path", str(ROOT / "tests/noop-filter/Cargo.toml"),
            "--target-dir", str(ROOT / "target/noop-filter"),
        ],  # fmt: skip
        check=True,
    )


def main() -> int:
    started = time.monotonic()
    for what, path in (("ENVOY_BIN", ENVOY_BIN), ("WASM", WASM)):
        if not Path(path).exists():
            print(f"{what}={path} does not exist (run `make bench`, or `make venv build`)", file=sys.stderr)
            return 2
    if not shutil.which(WRK) and not Path(WRK).exists():
        print("wrk not found: apt-get install -y wrk (make bench installs it)", file=sys.stderr)
        return 2
    ensure_noop_wasm()
    OUT.mkdir(parents=True, exist_ok=True)
    work = OUT / "run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    log(
        f"{'quick, ' if QUICK else ''}{REPEAT} repetition(s) x {SECONDS} s, {CONNECTIONS} connections; "
        f"Envoy {ENVOY_BIN}"
    )
    facts = machine_facts()
    if facts["loadavg_start"] > 0.5 * (facts["cores"] or 1):
        log(f"note: load average {facts['loadavg_start']:.2f}: the machine is busy, numbers will be noisy")
    tokens = tk.TokenSet(OUT, FRESH_TOKENS, log=log)
    all_scenarios = [
        Scenario("a", "one repeated token", tokens.one, False),
        Scenario("b", "1,000 distinct valid tokens, round-robin", tokens.thousand, False),
        Scenario("c", "a fresh token per request", tokens.fresh, True),
        Scenario("d", "50% bad signature, 50% valid (1,000 each, alternating)", tokens.mixed, False, 0.5),
    ]
    scenarios = [s for s in all_scenarios if s.key in SCENARIO_KEYS]
    valid, invalid = tokens.sample_valid(), tokens.sample_invalid()
    jwks = ev.JwksServer(tokens.jwks)
    configs = [c for c in ev.CONFIGS if WASM_RSA or c.key != "authorizer_wasm"]
    configs += ev.variants(os.environ.get("BENCH_VARIANTS", ""))
    config_paths = {}
    for c in configs:
        p = work / f"envoy-{c.key}.json"
        p.write_text(json.dumps(ev.envoy_config(c, tokens.jwks, jwks.port, WASM, NOOP_WASM, tokens.verify_ceiling()), indent=2))
        config_paths[c.key] = p

    results: dict = {
        "facts": facts,
        "configs": [c.key for c in configs],
        "scenarios": [{"key": s.key, "title": s.title} for s in scenarios],
        "repeat": REPEAT,
        "seconds": SECONDS,
        "connections": CONNECTIONS,
        "cold_samples": COLD_SAMPLES,
        "warmup": WARMUP,
        "fresh_tokens": tokens.fresh_count,
        "runs": {s.key: {c.key: [] for c in configs} for s in scenarios},
        "counters": {s.key: {} for s in scenarios},
        "module_bytes": {
            "noop": Path(NOOP_WASM).stat().st_size,
            "ceiling_headers": Path(NOOP_WASM).stat().st_size,
            "ceiling_verify": Path(NOOP_WASM).stat().st_size,
            "authorizer": Path(WASM).stat().st_size,
            "authorizer_wasm": Path(WASM).stat().st_size,
        },
        "signature_backends": {},
        "rss_idle_kib": {},
        "rss_after_b_kib": {},
        "cold_start_s": {c.key: [] for c in configs},
        "cold_listening_s": {c.key: [] for c in configs},
        "jwks_fetches_cold": [],
        "problems": [],
        "notes": [],
    }
    running: list[ev.Envoy] = []
    try:
        # ---- one Envoy per configuration, checked before anything is measured
        for i, c in enumerate(list(configs)):
            e = ev.Envoy(c, ENVOY_BIN, config_paths[c.key], ev.free_base_id(i), work)
            running.append(e)
            try:
                e.start()
                e.wait_listening(deadline_s=30 if not c.optional else 15)
                e.wait_status({"authorization": f"Bearer {valid}"}, 200)
                check_answers(e, valid, invalid)
            except RuntimeError as err:
                if not c.optional:
                    raise
                # e.g. a module without the option: the bench goes on without it.
                e.stop()
                running.remove(e)
                configs.remove(c)
                results["configs"].remove(c.key)
                results["notes"].append(f"{c.label}: left out, it did not start ({str(err).splitlines()[0]})")
                log(f"{c.label}: left out, it did not start")
                continue
        log("all configurations answer as expected (valid 200; no token and bad signature 401 where authenticating)")
        time.sleep(1)
        for e in running:
            results["rss_idle_kib"][e.cfg.key] = e.rss_kib()
        if WARMUP:
            log(f"warm-up: {WARMUP} s per configuration")
            for e in running:
                wrk_run(e.port, tokens.mixed, 0, WARMUP, CONNECTIONS)

        # ---- the measured runs
        cursor = {c.key: 0 for c in configs}
        max_fresh_run = 0
        for sc in scenarios:
            in_scenario = [e for e in running if sc.key in e.cfg.scenarios]
            if sc.key in "bd":
                # The valid tokens of d are those of b (c's fresh tokens have evicted them).
                for e in in_scenario:
                    if e.cfg.caches:
                        log(f"cache fill {e.cfg.key}: {fill_cache(e, tokens.thousand)}")
            for rep in range(REPEAT):
                order = in_scenario[rep % len(in_scenario) :] + in_scenario[: rep % len(in_scenario)]
                for e in order:
                    first = cursor[e.cfg.key] if sc.fresh else 0
                    before = e.stats(STAT_KEYS) if e.cfg.authenticates else {}
                    r = wrk_run(e.port, sc.tokens, first, SECONDS, CONNECTIONS)
                    if e.cfg.authenticates:
                        d = stat_delta(before, e.stats(STAT_KEYS))
                        acc = results["counters"][sc.key].setdefault(e.cfg.key, {})
                        for k, v in d.items():
                            acc[k] = acc.get(k, 0) + v
                    if sc.fresh:
                        # Every request wrk formatted, answered or in flight at the end.
                        cursor[e.cfg.key] += r["requests"] + CONNECTIONS
                        if e.cfg.authenticates:
                            max_fresh_run = max(max_fresh_run, r["requests"])
                    r["rep"] = rep
                    results["runs"][sc.key][e.cfg.key].append(r)
                    problem = check_run(e.cfg, sc.refused_share, r, CONNECTIONS)
                    if problem:
                        results["problems"].append(f"scenario {sc.key}, {e.cfg.label}, repetition {rep + 1}: {problem}")
                    log(
                        f"{sc.key} rep {rep + 1}/{REPEAT} {e.cfg.key:<10} {r['rps']:>9,.0f} req/s  "
                        f"p50 {r['p50_us'] / 1000:6.2f} ms  p99 {r['p99_us'] / 1000:6.2f} ms  "
                        f"non-2xx {r['non2xx']}{'  !! ' + problem if problem else ''}"
                    )
            if sc.key == "b":
                for e in in_scenario:
                    results["rss_after_b_kib"][e.cfg.key] = e.rss_kib()
        if max_fresh_run > tokens.fresh_count:
            results["notes"].append(
                f"Scenario c: a run sent {max_fresh_run:,} requests for {tokens.fresh_count:,} fresh "
                "tokens, so a token came back after the whole list had gone by (every cache, at "
                "most ~1,000 entries, had evicted it: see the cache-hit counters); "
                "BENCH_FRESH_TOKENS raises the count."
            )
        for key, d in results["counters"].get("d", {}).items():
            # Bad signatures always miss; the valid half should hit the warm cache.
            if not ev.BY_KEY[key].caches:
                continue
            _, misses = cache_counts(d)
            refused = sum(v for k, v in d.items() if k.endswith(("cognito_authorizer.denied_invalid", "jwt_authn.denied")))
            allowed = sum(v for k, v in d.items() if k.endswith(("cognito_authorizer.allowed", "jwt_authn.allowed")))
            if misses - refused > 0.05 * allowed:
                results["problems"].append(
                    f"scenario d, {ev.BY_KEY[key].label}: {misses - refused:,} of {allowed:,} valid "
                    "tokens missed the cache filled just before"
                )
        for key, d in results["counters"].get("c", {}).items():
            hits, _ = cache_counts(d)
            if hits:
                results["problems"].append(
                    f"scenario c, {ev.BY_KEY[key].label}: {hits:,} cache hits, but every token should be new to it"
                )

        # ---- micro-benchmark: one request at a time, every request verified
        log(f"verification cost: 1 connection, {MICRO_SECONDS} s per run")
        micro_keys = ["noauth", "noop", "jwt", "authorizer", "authorizer_wasm"]
        micro_envoys = [e for e in running if e.cfg.key in micro_keys]
        kinds = [
            # (kind, token file, walk the fresh list, share refused)
            ("valid", tokens.fresh, True, 0.0),
            # 1,000 distinct bad signatures: never cached, so each one is verified.
            ("bad signature", tokens.invalid, False, 1.0),
        ]
        reps = []
        for rep in range(REPEAT):
            order = micro_envoys[rep % len(micro_envoys) :] + micro_envoys[: rep % len(micro_envoys)]
            one: dict = {kind: {} for kind, *_ in kinds}
            for kind, token_file, fresh, refused in kinds:
                for e in order:
                    first = cursor[e.cfg.key] if fresh else 0
                    r = wrk_run(e.port, token_file, first, MICRO_SECONDS, 1)
                    if fresh:
                        cursor[e.cfg.key] += r["requests"] + 1
                    problem = check_run(e.cfg, refused, r, 1)
                    if problem:
                        results["problems"].append(f"verification cost ({kind}), {e.cfg.label}: {problem}")
                    one[kind][e.cfg.key] = r
                    log(
                        f"micro rep {rep + 1}/{REPEAT} {kind:<13} {e.cfg.key:<10} "
                        f"{r['rps']:>8,.0f} req/s  p50 {r['p50_us']:6d} µs"
                    )
            reps.append(one)
        summary = []
        for kind, *_ in kinds:
            for key, base, label in (
                ("authorizer", "noop", "cognito-authorizer − no-op wasm"),
                ("authorizer_wasm", "noop", "cognito-authorizer, RSA in Wasm − no-op wasm"),
                ("jwt", "noauth", "jwt_authn, no cache − no auth"),
            ):
                if any(key not in r[kind] for r in reps):
                    continue
                runs = [(r[kind][key], r[kind][base]) for r in reps]
                summary.append(
                    {
                        "label": f"{label}, {kind} tokens",
                        "p50_us": median([a["p50_us"] for a, _ in runs]),
                        "base_p50_us": median([b["p50_us"] for _, b in runs]),
                        "p50_diff_us": median([a["p50_us"] - b["p50_us"] for a, b in runs]),
                        "rate_diff_us": median([1e6 / a["rps"] - 1e6 / b["rps"] for a, b in runs]),
                    }
                )
        results["micro"] = {"seconds": MICRO_SECONDS, "reps": reps, "summary": summary}
        # Per Envoy process, whatever its number of worker VMs (README "Keys"): expect 1.
        results["jwks_fetches_bench"] = jwks.fetches
        for e in running:
            e.stop()  # flushes its log
            backend = signature_backend_line(e)
            if backend:
                results["signature_backends"][e.cfg.key] = backend
        running.clear()

        # ---- cold starts (the bench Envoys are gone: nothing else of ours runs)
        log(f"cold start: {COLD_SAMPLES} sample(s) per configuration")
        for sample in range(COLD_SAMPLES):
            order = configs[sample % len(configs) :] + configs[: sample % len(configs)]
            for c in order:
                e = ev.Envoy(c, ENVOY_BIN, config_paths[c.key], ev.free_base_id(10 + sample * len(configs) + configs.index(c)), work)
                running.append(e)
                fetches = jwks.fetches
                e.start()
                e.wait_listening()
                listening = time.monotonic() - e.started_at
                t = e.wait_status({"authorization": f"Bearer {valid}"}, 200)
                results["cold_start_s"][c.key].append(t)
                results["cold_listening_s"][c.key].append(listening)
                if c.key == "authorizer":
                    results["jwks_fetches_cold"].append(jwks.fetches - fetches)
                e.stop()
                running.remove(e)
                log(f"cold start {c.key:<10} listening {listening * 1000:5.0f} ms, first 200 {t * 1000:5.0f} ms")
    finally:
        for e in running:
            e.stop()
        jwks.stop()

    results["jwks_fetches"] = jwks.fetches
    results["facts"]["loadavg_end"] = os.getloadavg()[0]
    results["elapsed_s"] = time.monotonic() - started
    md = render(results)
    (OUT / "results.md").write_text(md + "\n")
    (OUT / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print()
    print(md)
    log(f"done in {results['elapsed_s']:.0f} s; written {OUT / 'results.md'} and results.json")
    return 1 if results["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
