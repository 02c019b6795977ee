"""Checks the Istio resources users copy (envoy/istio/*.yaml) without a cluster.

Three layers, each catching what the one before cannot:

1. Shape: every document against Istio's own CRD schema for its kind, as published on npm
   (tests/crds/README.md: unknown fields, types, enums, required fields), and against our
   hand-written JSON Schema (tests/istio/schemas/), which adds what we require of our own
   files, so a typo in a field name or an enum value (`failStrategy: FAIL_CLOSED`, which is
   Envoy's spelling, not Istio's) fails here as it would fail `kubectl apply`.
2. Consistency, what no schema can say: every `jwks_cluster` is the name of a cluster the
   ServiceEntry + DestinationRule of the same set create (`outbound|<port>||<host>`, plain
   HTTP port, TLS originated by the proxy) for the host of the pool's JWKS URI; the same for
   the EnvoyFilter's module download cluster; no plugin fails open; and an
   AuthorizationPolicy reads only identity headers a WasmPlugin on the same workloads sets.
3. Meaning: each filter configuration goes to the built filter in real Envoy
   (check_plugin_config.py), whose own parser accepts or refuses it.

Usage: validate.py [--no-envoy] [FILE.yaml ...]   (default: every envoy/istio/*.yaml)
Exit status 0 when everything passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "crds"))
import check_plugin_config  # noqa: E402  (sibling module)
import upstream_schemas  # noqa: E402  (tests/crds)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCHEMAS = HERE / "schemas"
KIND_SCHEMAS = {
    "WasmPlugin": "urn:cognito-authorizer:istio:wasmplugin",
    "ServiceEntry": "urn:cognito-authorizer:istio:serviceentry",
    "DestinationRule": "urn:cognito-authorizer:istio:destinationrule",
    "EnvoyFilter": "urn:cognito-authorizer:istio:envoyfilter",
    "AuthorizationPolicy": "urn:cognito-authorizer:istio:authorizationpolicy",
}


Check = check_plugin_config.Check


def load_registry() -> Registry:
    resources = []
    for path in sorted(SCHEMAS.glob("*.schema.json")):
        schema = json.loads(path.read_text())
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


REGISTRY = load_registry()


def schema_problems(doc: dict) -> list[str]:
    """Every schema violation of one document, each as `path: message`."""
    if not isinstance(doc, dict):
        return ["a document must be a mapping"]
    kind = doc.get("kind")
    if kind not in KIND_SCHEMAS:
        return [f"kind {kind!r}: no schema (expected one of {', '.join(KIND_SCHEMAS)})"]
    schema = REGISTRY.contents(KIND_SCHEMAS[kind])
    validator = Draft202012Validator(schema, registry=REGISTRY, format_checker=Draft202012Validator.FORMAT_CHECKER)
    problems = []
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in err.absolute_path).replace(".[", "[")
        problems.append(f"{where or '(document)'}: {err.message}")
    return problems


# ---------------------------------------------------------------------------------------
# Consistency between the resources of the set.


def tls_origination_clusters(docs: list[dict]) -> dict[str, str]:
    """Cluster name → host, for every ServiceEntry port that takes plain HTTP and that a
    DestinationRule of the set sends out with TLS (mode SIMPLE) — the only clusters a
    plain-HTTP callout (JWKS fetch, module download) can use to reach an HTTPS server."""
    simple_ports: dict[str, set] = {}  # host → port numbers with TLS SIMPLE (None: all ports)
    for d in docs:
        if d.get("kind") != "DestinationRule":
            continue
        spec = d.get("spec") or {}
        host = spec.get("host")
        policy = spec.get("trafficPolicy") or {}
        ports = simple_ports.setdefault(host, set())
        if (policy.get("tls") or {}).get("mode") == "SIMPLE":
            ports.add(None)
        for pl in policy.get("portLevelSettings") or []:
            if (pl.get("tls") or {}).get("mode") == "SIMPLE":
                ports.add((pl.get("port") or {}).get("number"))
    clusters = {}
    for d in docs:
        if d.get("kind") != "ServiceEntry":
            continue
        spec = d.get("spec") or {}
        for host in spec.get("hosts") or []:
            for port in spec.get("ports") or []:
                number = port.get("number")
                originated = simple_ports.get(host, set())
                if port.get("protocol") == "HTTP" and (None in originated or number in originated):
                    clusters[f"outbound|{number}||{host}"] = host
    return clusters


def jwks_host(pool: dict) -> str | None:
    """Host of the pool's JWKS URI, as the filter derives it (README "Configuration reference")."""
    if isinstance(pool.get("jwks_uri"), str):
        return urlsplit(pool["jwks_uri"]).hostname
    if isinstance(pool.get("issuer"), str):
        return urlsplit(pool["issuer"]).hostname
    pool_id = pool.get("user_pool_id")
    if isinstance(pool_id, str) and "_" in pool_id:
        return f"cognito-idp.{pool_id.split('_', 1)[0]}.amazonaws.com"
    return None


def filter_configs(doc: dict) -> list[tuple[str, dict | None]]:
    """(where, parsed filter configuration) of a WasmPlugin or of each Wasm patch."""
    if doc.get("kind") == "WasmPlugin":
        return [("spec.pluginConfig", (doc.get("spec") or {}).get("pluginConfig"))]
    out = []
    for i, value in check_plugin_config.wasm_patches(doc):
        conf = ((value.get("typed_config") or {}).get("config") or {}).get("configuration") or {}
        try:
            parsed = json.loads(conf.get("value", ""))
        except (ValueError, AttributeError):
            parsed = None
        out.append((f"spec.configPatches[{i}]...configuration", parsed))
    return out


def consistency_problems(doc: dict, clusters: dict[str, str]) -> list[str]:
    problems = []
    known = ", ".join(sorted(clusters)) or "none"
    kind = doc.get("kind")
    if kind == "WasmPlugin" and (doc.get("spec") or {}).get("failStrategy") == "FAIL_OPEN":
        problems.append("spec.failStrategy: FAIL_OPEN lets requests through unauthenticated when the "
                        "module cannot load; an authorizer must use FAIL_CLOSE")
    if kind == "EnvoyFilter":
        for i, value in check_plugin_config.wasm_patches(doc):
            config = (value.get("typed_config") or {}).get("config") or {}
            where = f"spec.configPatches[{i}].patch.value.typed_config.config"
            if config.get("failure_policy") == "FAIL_OPEN" or config.get("fail_open") is True:
                problems.append(f"{where}: fails open; an authorizer must fail closed (FAIL_CLOSED)")
            remote = ((config.get("vm_config") or {}).get("code") or {}).get("remote")
            if remote is not None:
                http_uri = remote.get("http_uri") or {}
                cluster, uri = http_uri.get("cluster"), http_uri.get("uri", "")
                if clusters.get(cluster) != urlsplit(uri).hostname:
                    problems.append(f"{where}.vm_config.code.remote.http_uri.cluster: {cluster!r} is not a cluster "
                                    f"with TLS origination to {urlsplit(uri).hostname!r} in this set ({known})")
                if not remote.get("sha256"):
                    problems.append(f"{where}.vm_config.code.remote.sha256: required, Envoy would not verify "
                                    "or cache the downloaded module")
    for where, config in filter_configs(doc):
        if not isinstance(config, dict):
            problems.append(f"{where}: not a JSON object")
            continue
        for j, pool in enumerate(config.get("user_pools") or []):
            if not isinstance(pool, dict):
                continue
            cluster, host = pool.get("jwks_cluster"), jwks_host(pool)
            if clusters.get(cluster) != host:
                problems.append(f"{where}.user_pools[{j}].jwks_cluster: {cluster!r} is not a cluster with TLS "
                                f"origination to {host!r} in this set ({known}); see serviceentry.yaml")
    return problems


def identity_header_problems(doc: dict, plugins: list[dict]) -> list[str]:
    """An AuthorizationPolicy may only read identity headers that a WasmPlugin of the set,
    on the same workloads, sets from the verified token (`claims_to_headers`): any other
    header is the client's to write."""
    selector = (doc.get("spec") or {}).get("selector")
    set_by_plugin = {
        header.lower()
        for plugin in plugins
        if (plugin.get("spec") or {}).get("selector") == selector
        for header in (((plugin.get("spec") or {}).get("pluginConfig") or {}).get("claims_to_headers") or {}).values()
        if isinstance(header, str)
    }
    problems = []
    for i, rule in enumerate((doc.get("spec") or {}).get("rules") or []):
        for j, condition in enumerate(rule.get("when") or []):
            key = condition.get("key", "")
            header = key.removeprefix("request.headers[").removesuffix("]").lower()
            if key.startswith("request.headers[") and header not in set_by_plugin:
                problems.append(f"spec.rules[{i}].when[{j}].key: {header!r} is not set by a WasmPlugin of this "
                                f"set on the same workloads (claims_to_headers: {sorted(set_by_plugin)})")
    return problems


# ---------------------------------------------------------------------------------------


def load(paths: list[Path]) -> list[tuple[str, dict]]:
    docs = []
    for path in paths:
        try:
            docs += check_plugin_config.load_documents(path)
        except yaml.YAMLError as e:
            docs.append((f"{path}", {"kind": None, "_yaml_error": str(e)}))
    return docs


def run(paths: list[Path], envoy: bool = True) -> list[Check]:
    docs = load(paths)
    checks = []
    upstream = upstream_schemas.problems([(label, doc) for label, doc in docs if "_yaml_error" not in doc])
    for label, doc in docs:
        if "_yaml_error" in doc:
            checks.append(Check(f"{label}: YAML", [doc["_yaml_error"]]))
            continue
        checks.append(Check(f"{label}: schema", schema_problems(doc)))
        checks.append(Check(f"{label}: upstream schema", upstream[label]))
    plain = [d for _, d in docs if "_yaml_error" not in d]
    clusters = tls_origination_clusters(plain)
    plugins = [d for d in plain if d.get("kind") == "WasmPlugin"]
    for label, doc in docs:
        if doc.get("kind") in ("WasmPlugin", "EnvoyFilter"):
            checks.append(Check(f"{label}: clusters and failure policy", consistency_problems(doc, clusters)))
        if doc.get("kind") == "AuthorizationPolicy":
            checks.append(Check(f"{label}: identity headers", identity_header_problems(doc, plugins)))
    if envoy:
        for r in check_plugin_config.check_documents([(l, d) for l, d in docs if "_yaml_error" not in d]):
            checks.append(Check(r.label, [] if r.ok else [r.detail or "refused"]))
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="YAML files (default: envoy/istio/*.yaml)")
    parser.add_argument("--no-envoy", action="store_true", help="skip the checks in Envoy (layer 3)")
    args = parser.parse_args(argv)
    files = args.files or sorted(p.relative_to(Path.cwd()) if p.is_relative_to(Path.cwd()) else p
                               for p in (ROOT / "envoy" / "istio").glob("*.yaml"))
    if not files:
        print("no files to validate", file=sys.stderr)
        return 1
    checks = run(files, envoy=not args.no_envoy)
    return check_plugin_config.report(checks, "istio")


if __name__ == "__main__":
    sys.exit(main())
