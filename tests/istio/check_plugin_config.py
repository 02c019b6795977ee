"""Gives the filter configurations of our Istio resources to the real filter, in real Envoy.

A WasmPlugin's `pluginConfig` and an EnvoyFilter's Wasm `configuration` are free-form for
Kubernetes and istiod: only the filter's own parser (`on_configure`) can say whether they
are right. So each one is rendered into a minimal Envoy bootstrap that loads the built
module with that configuration, and `envoy --mode validate` is run on it: validate mode
creates the Wasm VM and calls `on_configure`, and a configuration the filter refuses fails
validation (checked: an unknown key, a bad pool id). The filter's one log line naming the
key is shown.

A WasmPlugin is rendered the way istiod renders it (pilot/pkg/model/extensions.go):
`root_id` = pluginName, `name` = <namespace>.<name>, no vm_id, and the configuration is the
pluginConfig *as a protobuf Struct serialised to JSON* (see `istio_struct_json`). The module
is the freshly built one instead of the OCI image, and the failure policy is always
FAIL_CLOSED here, so that a refused configuration can never pass as "skipped".

An EnvoyFilter's patch value is an Envoy HTTP filter: it goes into the bootstrap as written
(so Envoy checks its whole typed_config, remote code source included), then a second time
with the remote code replaced by the built module, because validate mode does not download
remote code and so would not run `on_configure`.

Usage: check_plugin_config.py FILE.yaml...   (exit 0 when every configuration is accepted)
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "cognito_authorizer.wasm"
WASM_FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
STRING_VALUE_TYPE = "type.googleapis.com/google.protobuf.StringValue"

# WasmPlugin.failStrategy → Envoy PluginConfig.failure_policy, as istiod maps it.
FAIL_STRATEGY_TO_POLICY = {
    "FAIL_CLOSE": "FAIL_CLOSED",
    "FAIL_OPEN": "FAIL_OPEN",
    "FAIL_RELOAD": "FAIL_RELOAD",
}


@dataclass
class Result:
    label: str
    ok: bool
    detail: str


def find_envoy() -> str:
    """$ENVOY_BIN, then the project venv's envoy, then `envoy` on PATH."""
    candidates = [os.environ.get("ENVOY_BIN"), str(ROOT / ".venv" / "bin" / "envoy"), shutil.which("envoy")]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    raise SystemExit("no Envoy binary: set ENVOY_BIN or run `make venv`")


def find_wasm() -> Path:
    wasm = Path(os.environ.get("WASM", DEFAULT_WASM))
    if not wasm.is_file():
        raise SystemExit(f"{wasm}: no built module, run `make build` (or set WASM)")
    return wasm


# ---------------------------------------------------------------------------------------
# pluginConfig → the JSON string istiod puts in the filter's `configuration`.


def _go_float(f: float) -> str:
    """A double as Go's encoding/json writes it (what jsonpb uses for Struct numbers).

    Fixed notation with the shortest digits that round-trip, so integral values come out
    as "60", not "60.0", and integer settings reach the filter as JSON integers; exponent
    notation below 1e-6 and from 1e21 on ("1e+21", "1.5e-7").
    """
    if math.isnan(f) or math.isinf(f):
        raise ValueError("NaN and Infinity cannot be put in a protobuf Struct")
    a = abs(f)
    if a != 0 and (a < 1e-6 or a >= 1e21):
        # Python's repr is then in exponent form with the shortest digits, as Go's 'e', -1;
        # Go's encoder then shortens a two-digit negative exponent: e-07 -> e-7.
        return re.sub(r"e-0(\d)$", r"e-\1", repr(f))
    return format(Decimal(repr(f)).normalize(), "f")


def _struct_value(v):
    """YAML value → protobuf Value semantics: every number becomes a double."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, list):
        return [_struct_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _struct_value(x) for k, x in v.items()}
    raise TypeError(f"{type(v).__name__} cannot be put in a protobuf Struct (from YAML: {v!r})")


def _dump(v) -> str:
    if isinstance(v, float):
        return _go_float(v)
    if isinstance(v, dict):
        return "{" + ",".join(json.dumps(k) + ":" + _dump(x) for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(_dump(x) for x in v) + "]"
    return json.dumps(v, ensure_ascii=False)


def istio_struct_json(plugin_config: dict) -> str:
    """What the filter receives from a WasmPlugin's pluginConfig.

    istiod holds pluginConfig as a google.protobuf.Struct (numbers are doubles) and writes
    it with protomarshal.ToJSON into a StringValue. Key order does not matter to our parser.
    """
    return _dump(_struct_value(plugin_config))


# ---------------------------------------------------------------------------------------
# Bootstrap rendering and Envoy.


def _static_cluster(name: str) -> dict:
    # Validate mode connects to nothing; the address only has to be well-formed.
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": 9}}}}]}],
        },
    }


def render_bootstrap(http_filter: dict, clusters: list[str]) -> dict:
    """One listener whose HTTP chain is `http_filter` then the router."""
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "istio_check",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]},
        "http_filters": [
            http_filter,
            {"name": "envoy.filters.http.router",
             "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ],
    }
    return {
        "static_resources": {
            "listeners": [{
                "name": "istio_check",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
            }],
            "clusters": [_static_cluster(c) for c in sorted(set(clusters))],
        }
    }


def envoy_validate(bootstrap: dict) -> tuple[bool, str]:
    """`envoy --mode validate` on the bootstrap: (accepted, the log lines worth showing)."""
    with tempfile.TemporaryDirectory(prefix="istio-check-") as tmp:
        path = Path(tmp) / "bootstrap.json"
        path.write_text(json.dumps(bootstrap, indent=1))
        proc = subprocess.run(
            [find_envoy(), "--mode", "validate", "-c", str(path), "--log-level", "warn"],
            capture_output=True, text=True, timeout=300,
        )
    out = proc.stdout + proc.stderr
    # Our filter's own lines first: on refusal, its one line names the key at fault.
    lines = [l for l in out.splitlines() if "wasm log" in l or "error" in l or "critical" in l]
    return proc.returncode == 0, "\n".join(lines[-12:]) or out[-2000:]


def _pool_clusters(config_json: str) -> list[str]:
    """The jwks clusters a configuration names (defined in the bootstrap so that the only
    question left to Envoy is the configuration itself)."""
    try:
        cfg = json.loads(config_json)
        return [p["jwks_cluster"] for p in cfg.get("user_pools", [])
                if isinstance(p, dict) and isinstance(p.get("jwks_cluster"), str) and p["jwks_cluster"]]
    except (ValueError, AttributeError, TypeError):
        return []


def wasm_filter_for_plugin(doc: dict, wasm: Path) -> tuple[dict, str]:
    """The Envoy HTTP filter istiod would build from a WasmPlugin (module: the built one)."""
    spec = doc.get("spec") or {}
    meta = doc.get("metadata") or {}
    plugin_config = spec.get("pluginConfig") or {}
    config_json = istio_struct_json(plugin_config)
    config = {
        "name": f"{meta.get('namespace', 'default')}.{meta.get('name', 'wasmplugin')}",
        "root_id": spec.get("pluginName", ""),
        # Always closed here: a refused configuration must fail this check (see module doc).
        "failure_policy": "FAIL_CLOSED",
        "vm_config": {"runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": str(wasm)}}},
    }
    if plugin_config:
        config["configuration"] = {"@type": STRING_VALUE_TYPE, "value": config_json}
    return {"name": config["name"], "typed_config": {"@type": WASM_FILTER_TYPE, "config": config}}, config_json


@dataclass
class Job:
    """One Envoy validation: a label for the report and the bootstrap to validate."""
    label: str
    bootstrap: dict


def wasmplugin_jobs(doc: dict, label: str, wasm: Path) -> list[Job]:
    http_filter, config_json = wasm_filter_for_plugin(doc, wasm)
    return [Job(f"{label}: pluginConfig accepted by the filter in Envoy",
                render_bootstrap(http_filter, _pool_clusters(config_json)))]


def wasm_patches(doc: dict) -> list[tuple[int, dict]]:
    """(index, patch value) of each configPatch that inserts an envoy Wasm HTTP filter."""
    out = []
    for i, p in enumerate((doc.get("spec") or {}).get("configPatches") or []):
        value = (p.get("patch") or {}).get("value") or {}
        if (value.get("typed_config") or {}).get("@type") == WASM_FILTER_TYPE:
            out.append((i, value))
    return out


def envoyfilter_jobs(doc: dict, label: str, wasm: Path) -> list[Job]:
    jobs = []
    for i, value in wasm_patches(doc):
        config = value["typed_config"].get("config") or {}
        conf = config.get("configuration") or {}
        config_json = conf.get("value", "") if isinstance(conf, dict) else ""
        clusters = _pool_clusters(config_json)
        remote = ((config.get("vm_config") or {}).get("code") or {}).get("remote") or {}
        uri_cluster = (remote.get("http_uri") or {}).get("cluster")
        # 1. As written: Envoy checks the whole filter, the remote code source included.
        jobs.append(Job(f"{label}: configPatches[{i}] is a filter Envoy accepts",
                        render_bootstrap(value, clusters + ([uri_cluster] if uri_cluster else []))))
        # 2. With the built module in place of the download: the filter parses the configuration.
        local = copy.deepcopy(value)
        local["typed_config"].setdefault("config", {}).setdefault("vm_config", {})["code"] = {
            "local": {"filename": str(wasm)}}
        jobs.append(Job(f"{label}: configPatches[{i}] configuration accepted by the filter in Envoy",
                        render_bootstrap(local, clusters)))
    return jobs


def check_documents(docs: list[tuple[str, dict]], wasm: Path | None = None) -> list[Result]:
    """Every WasmPlugin and Wasm EnvoyFilter among (label, document) pairs, Envoys in parallel."""
    jobs: list[Job] = []
    for label, doc in docs:
        if doc.get("kind") == "WasmPlugin":
            jobs += wasmplugin_jobs(doc, label, wasm or find_wasm())
        elif doc.get("kind") == "EnvoyFilter":
            jobs += envoyfilter_jobs(doc, label, wasm or find_wasm())
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        outcomes = list(pool.map(lambda j: envoy_validate(j.bootstrap), jobs))
    return [Result(j.label, ok, "" if ok else log) for j, (ok, log) in zip(jobs, outcomes)]


def load_documents(path: Path) -> list[tuple[str, dict]]:
    with path.open() as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    return [(f"{path} #{i + 1} {d.get('kind', '?')}/{(d.get('metadata') or {}).get('name', '?')}", d)
            for i, d in enumerate(docs)]


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    docs = [d for p in argv for d in load_documents(Path(p))]
    results = check_documents(docs)
    for r in results:
        print(("ok    " if r.ok else "FAIL  ") + r.label)
        if r.detail:
            print("      " + r.detail.replace("\n", "\n      "))
    return 0 if all(r.ok for r in results) else 1



@dataclass
class Check:
    """One resource check (the Istio and Envoy Gateway validators): what, and what is wrong."""

    label: str
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def report(checks: list[Check], kind: str) -> int:
    """Prints every check and a closing `<kind>: N passed, N failed` line; the exit code."""
    for c in checks:
        print(("ok    " if c.ok else "FAIL  ") + c.label)
        for p in c.problems:
            print("      " + p.replace("\n", "\n      "))
    failed = sum(not c.ok for c in checks)
    print(f"{kind}: {len(checks) - failed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
