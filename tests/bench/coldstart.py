"""What a cold start is made of: Envoy (`--concurrency 2`) with the no-op Wasm filter and with
cognito-authorizer is started SAMPLES times each, at debug level for the `wasm` component and
info for the rest; the timeline of each start (exec → listener → first authorised 200) is
read from Envoy's own log timestamps and the filter's debug lines:

    ENVOY_BIN=<envoy> WASM=<module> NOOP_WASM=<no-op module> .venv/bin/python tests/bench/coldstart.py

Environment: SAMPLES (5), SIGNATURE_BACKEND ("auto"; "wasm": the bench's configuration with
the module's own RSA), MODULES ("name=path,name=path": several builds of the filter compared
in one run, starts interleaved with the no-op filter's, instead of WASM).
Prints, per configuration, the median milliseconds from exec to each event, and Envoy's RSS
1 s after the first authorised 200 (idle).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import envoys as ev  # noqa: E402
import tokens as tk  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "target" / "bench" / "coldstart"
SAMPLES = int(os.environ.get("SAMPLES", "5"))
ENVOY_BIN = os.environ.get("ENVOY_BIN") or str(ROOT / ".venv" / "bin" / "envoy")
WASM = os.environ.get("WASM") or str(ROOT / "target/wasm32-wasip1/release/cognito_authorizer.wasm")
NOOP_WASM = os.environ.get("NOOP_WASM") or str(
    ROOT / "target/noop-filter/wasm32-wasip1/release/noop_filter.wasm"
)

# (event, pattern of the log line: the first match counts, or the last with "last:")
EVENTS = [
    ("envoy starts (log opened)", r"initializing epoch 0"),
    ("first VM created", r"wasm.*(?:createWasm|Wasm VM|vm_id|create)"),
    ("filter configured (first VM)", r"version \S+: configured"),
    ("configuration parse + self-test (debug)", r"cold start: configuration parsed"),
    ("JWKS fetch dispatched", r"fetching JWKS via cluster"),
    ("JWKS loaded (fetching VM)", r"loaded JWKS with kids"),
    ("keys picked up from shared data (other VM)", r"using the key set published in shared data"),
    ("workers started", r"starting workers|all clusters initialized"),
    ("last: filter configured (last VM)", r"version \S+: configured"),
]
TIMESTAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})\]")


def timeline(log: str, exec_wall: float) -> dict[str, float]:
    lines = []
    for line in log.splitlines():
        m = TIMESTAMP.match(line)
        if m:
            t = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
            lines.append(((t - exec_wall) * 1000, line))
    out = {}
    for name, pattern in EVENTS:
        last = name.startswith("last: ")
        hits = [ms for ms, line in lines if re.search(pattern, line)]
        if hits:
            out[name] = hits[-1] if last else hits[0]
    return out


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    tokens = tk.TokenSet(OUT, 10, log=lambda m: None)
    valid = tokens.sample_valid()
    jwks = ev.JwksServer(tokens.jwks)
    backend = os.environ.get("SIGNATURE_BACKEND", "auto")
    results: dict[str, list[dict]] = {}
    rss_idle: dict[str, list[float]] = {}
    modules = [m.split("=", 1) for m in os.environ.get("MODULES", "").split(",") if m] or [
        ["authorizer", WASM]
    ]
    runs = [("noop", "noop", NOOP_WASM)] + [
        (name, "authorizer" if backend == "auto" else "authorizer_wasm", path) for name, path in modules
    ]
    try:
        paths = {}
        paths_index = {name: i for i, (name, _, _) in enumerate(runs)}
        for name, key, wasm in runs:
            cfg = ev.BY_KEY[key]
            conf = ev.envoy_config(cfg, tokens.jwks, jwks.port, wasm, NOOP_WASM)
            paths[name] = OUT / f"envoy-{name}.json"
            paths[name].write_text(json.dumps(conf))
        for sample in range(SAMPLES):
            # Interleaved, one further along each time: a slow moment hits all alike.
            order = runs[sample % len(runs):] + runs[: sample % len(runs)]
            for name, key, _ in order:
                cfg = ev.BY_KEY[key]
                path = paths[name]
                e = ev.Envoy(cfg, ENVOY_BIN, path, ev.free_base_id(40 + sample * len(runs) + paths_index[name]), OUT)
                # Debug for the filter's timeline lines, info for Envoy's own milestones.
                e.log_level, e.component_log_level = "info", "wasm:debug"
                e.start()
                exec_wall = time.time()
                e.wait_listening()
                listening = (time.monotonic() - e.started_at) * 1000
                first_200 = e.wait_status({"authorization": f"Bearer {valid}"}, 200) * 1000
                time.sleep(1)
                rss = e.rss_kib() / 1024
                e.stop()
                t = timeline(e.log_path.read_text(errors="replace"), exec_wall)
                t["listener up (admin)"] = listening
                t["first authorised 200"] = first_200
                results.setdefault(name, []).append(t)
                rss_idle.setdefault(name, []).append(rss)
                print(f"{name} sample {sample + 1}: RSS {rss:.1f} MiB; " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(t.items(), key=lambda kv: kv[1])), flush=True)
    finally:
        jwks.stop()
    print()
    noop_first = statistics.median(s["first authorised 200"] for s in results["noop"])
    noop_rss = statistics.median(rss_idle["noop"])
    for key, samples in results.items():
        first = statistics.median(s["first authorised 200"] for s in samples)
        rss = statistics.median(rss_idle[key])
        print(
            f"## {key}: first authorised 200 {first:.0f} ms ({first / noop_first:.2f}x no-op), "
            f"RSS idle {rss:.1f} MiB ({rss - noop_rss:+.1f} vs no-op) [{min(rss_idle[key]):.1f}-{max(rss_idle[key]):.1f}]"
        )
        print(f"   (median of {len(samples)} starts, ms from exec)")
        names = sorted({n for s in samples for n in s}, key=lambda n: statistics.median([s[n] for s in samples if n in s]))
        for n in names:
            vals = [s[n] for s in samples if n in s]
            print(f"  {statistics.median(vals):7.0f}  [{min(vals):.0f}–{max(vals):.0f}]  {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
