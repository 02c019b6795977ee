#!/usr/bin/env python3
"""RS256 verification in Envoy's V8: the authorizer's own verifier against RustCrypto's `rsa`
(issue 18, item 4). Builds nothing: give it the modules build.sh made (README.md here).

One Envoy per module (`--concurrency 1`, everything on 127.0.0.1, ports chosen by Envoy),
all running side by side. Each request asks its module to verify the fixed signature
`--count` times and reads back the time the module measured around those verifications (the
host clock, inside the VM: no HTTP or Envoy cost is in it). After `--warmup` requests to each
Envoy, every round sends `--requests` requests to each module in turn (the order rotating
from one request to the next), for each key size; the machine is shared, so modules are
compared request by request (paired ratios) and the spread over rounds is reported.

    .venv/bin/python tests/rsa-compare/run.py            # the five modules build.sh makes
    .venv/bin/python tests/rsa-compare/run.py --rounds 1 --requests 5   # a smoke run

Standard library and tests/support only. Prints Markdown tables and writes them to <workdir>/results.md, every
sample (µs per verification, in request order) to <workdir>/samples.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from support.envoy import Envoy, bootstrap, wasm_filter  # noqa: E402
from support.ports import LOOPBACK  # noqa: E402

VARIANTS = ["none", "digest", "own", "rustcrypto", "rustcrypto32"]
WHAT = {
    "none": "no verifier (the rig's fixed cost)",
    "digest": "SHA-256 of the message only",
    "own": "src/rsa.rs (32-bit limbs, Montgomery CIOS)",
    "rustcrypto": "rsa 0.10.0 on crypto-bigint 0.7 (default: 64-bit limbs on wasm32)",
    "rustcrypto32": "rsa 0.10.0, crypto-bigint forced to 32-bit limbs (--cfg cpubits=\"32\")",
}


class Rig:
    """One module in its own Envoy (tests/support's, as the end-to-end tests start it), and a
    kept-alive connection to it."""

    def __init__(self, envoy_bin: str, name: str, wasm: Path, workdir: Path):
        self.name = name
        # The module answers every request itself: the upstream cluster is never contacted.
        config = bootstrap([wasm_filter(str(wasm), {})], 1, {})
        self.envoy = Envoy(envoy_bin, config, workdir, name, concurrency=1)
        self.conn: http.client.HTTPConnection | None = None

    def wait_ready(self) -> None:
        self.envoy.wait_ready(timeout=60.0)

    def verify(self, count: int, bits: int) -> dict[str, str]:
        """One request; the module's headers. Refuses anything but a clean 200."""
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(LOOPBACK, self.envoy.port, timeout=120)
            try:
                self.conn.request("GET", "/", headers={"x-verify-count": str(count), "x-key-bits": str(bits)})
                response = self.conn.getresponse()
                body = response.read()
                break
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        headers = {k.lower(): v for k, v in response.getheaders()}
        if response.status != 200:
            raise SystemExit(f"{self.name}: HTTP {response.status} {body!r} {headers}")
        if headers.get("x-verify-failures") != "0" or headers.get("x-verify-count") != str(count):
            raise SystemExit(f"{self.name}: unexpected answer {headers}")
        if headers.get("x-key-bits") != str(bits):
            raise SystemExit(f"{self.name}: answered for key {headers.get('x-key-bits')}, not {bits}")
        return headers

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.envoy.stop()


def fmt_us(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envoy", default=os.environ.get("ENVOY_BIN", str(ROOT / ".venv/bin/envoy")))
    ap.add_argument("--module", action="append", default=[], metavar="NAME=PATH",
                    help="a module to measure (repeatable); default: target/rsa-compare-<v>/rsa_compare.wasm "
                    f"for v in {', '.join(VARIANTS)}, those that exist")  # fmt: skip
    ap.add_argument("--bits", default="2048,4096")
    ap.add_argument("--count", type=int, default=100, help="verifications per request")
    ap.add_argument("--warmup", type=int, default=20, help="requests per Envoy and key size before measuring")
    ap.add_argument("--requests", type=int, default=30, help="measured requests per module, key size and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", default=str(ROOT / "target/rsa-compare-run"))
    args = ap.parse_args()

    modules: dict[str, Path] = {}
    for spec in args.module:
        name, _, path = spec.partition("=")
        modules[name] = Path(path).resolve()
    if not modules:
        for v in VARIANTS:
            p = ROOT / f"target/rsa-compare-{v}/rsa_compare.wasm"
            if p.exists():
                modules[v] = p
    if not modules:
        raise SystemExit("no modules: run tests/rsa-compare/build.sh first")
    bits_list = [int(b) for b in args.bits.split(",")]
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    version = subprocess.run([args.envoy, "--version"], capture_output=True, text=True).stdout.strip()
    version = version.split("version:", 1)[-1].strip()
    started = dt.datetime.now(dt.timezone.utc)
    load_before = os.getloadavg()

    envoys = [Rig(args.envoy, name, path, workdir) for name, path in modules.items()]
    # samples[name][bits] = [(round, index, µs per verification)]
    samples: dict[str, dict[int, list[tuple[int, int, float]]]] = {n: {b: [] for b in bits_list} for n in modules}
    info: dict[str, dict[str, str]] = {}
    try:
        for e in envoys:
            e.wait_ready()
        for bits in bits_list:
            for e in envoys:
                for _ in range(args.warmup):
                    h = e.verify(args.count, bits)
                info.setdefault(e.name, {})["limb_bits"] = h.get("x-limb-bits", "?")
                info[e.name][f"import_{bits}"] = h.get("x-import-ns", "?")
        for r in range(args.rounds):
            for bits in bits_list:
                for i in range(args.requests):
                    shift = (i + r) % len(envoys)
                    for e in envoys[shift:] + envoys[:shift]:
                        h = e.verify(args.count, bits)
                        samples[e.name][bits].append((r, i, int(h["x-verify-ns-total"]) / 1000 / args.count))
                print(f"round {r + 1}/{args.rounds}, {bits} bits: done", file=sys.stderr)
    finally:
        for e in envoys:
            e.stop()
    load_after = os.getloadavg()

    sizes = {n: p.stat().st_size for n, p in modules.items()}
    lines = [
        f"RS256 verification inside Envoy's V8, {started:%Y-%m-%d %H:%M} UTC: Envoy {version}, "
        f"`--concurrency 1`, one Envoy per module side by side; {platform.node()} "
        f"({os.cpu_count()} CPUs, load average {load_before[0]:.1f} before, {load_after[0]:.1f} after).",
        f"{args.rounds} rounds × {args.requests} requests per module and key size, each request "
        f"{args.count} verifications timed inside the module; {args.warmup} warm-up requests per "
        "module and key size first. Message: 878 bytes (a Cognito ID token's signing input).",
        "",
        "| module | what | limb bits | bytes (after wasm-opt) | bytes − none |",
        "|---|---|---:|---:|---:|",
    ]
    base = sizes.get("none")
    for n in modules:
        delta = f"{sizes[n] - base:+,}" if base is not None and n != "none" else "—"
        lines.append(f"| {n} | {WHAT.get(n, n)} | {info[n]['limb_bits']} | {sizes[n]:,} | {delta} |")
    lines.append("")
    for bits in bits_list:
        lines += [
            f"**{bits}-bit key**: µs per verification (every request of every round; per-round medians in brackets)",
            "",
            "| module | median | min | max | per-round medians | requests | key import µs |",
            "|---|---:|---:|---:|---|---:|---:|",
        ]
        for n in modules:
            values = [s[2] for s in samples[n][bits]]
            per_round = [statistics.median([s[2] for s in samples[n][bits] if s[0] == r]) for r in range(args.rounds)]
            imp = info[n].get(f"import_{bits}", "?")
            imp = fmt_us(int(imp) / 1000) if imp.isdigit() else imp
            lines.append(
                f"| {n} | {fmt_us(statistics.median(values))} | {fmt_us(min(values))} | {fmt_us(max(values))} "
                f"| {' / '.join(fmt_us(v) for v in per_round)} | {len(values)} | {imp} |"
            )
        lines.append("")
        if "own" in modules:
            own = {(r, i): v for r, i, v in samples["own"][bits]}
            rows = []
            for n in modules:
                if n in ("own", "none"):
                    continue
                ratios_by_round = []
                for r in range(args.rounds):
                    ratios_by_round.append(
                        statistics.median([v / own[(rr, i)] for rr, i, v in samples[n][bits] if rr == r])
                    )
                rows.append(
                    f"| {n} / own | {statistics.median(ratios_by_round):.2f}× | "
                    f"{min(ratios_by_round):.2f}–{max(ratios_by_round):.2f}× |"
                )
            if rows:
                lines += [
                    f"Paired ratios, {bits} bits (time of the module / time of own, request by request; "
                    "median over the rounds of each round's median):",
                    "",
                    "| ratio | median | range over rounds |",
                    "|---|---:|---:|",
                    *rows,
                    "",
                ]
    text = "\n".join(lines)
    print(text)
    (workdir / "results.md").write_text(text + "\n")
    raw = {
        "started": f"{started:%Y-%m-%dT%H:%M:%SZ}", "envoy": version, "count": args.count,
        "load": [load_before[0], load_after[0]], "bytes": sizes, "info": info,
        "us_per_verification": {n: {str(b): [s[2] for s in v] for b, v in by.items()} for n, by in samples.items()},
        "round_index": {str(b): [[s[0], s[1]] for s in samples[next(iter(modules))][b]] for b in bits_list},
    }  # fmt: skip
    (workdir / "samples.json").write_text(json.dumps(raw, indent=1) + "\n")
    print(f"(written to {workdir / 'results.md'}; every sample in samples.json)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
