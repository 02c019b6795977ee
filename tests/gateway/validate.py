"""Checks the Envoy Gateway resources users copy (envoy/gateway/*.yaml) without a cluster.

Three layers, each catching what the one before cannot:

1. Shape: every document against the upstream schema of its kind (Envoy Gateway's
   EnvoyExtensionPolicy and Backend, the Gateway API's HTTPRoute; tests/crds/README.md):
   an unknown field, a wrong type or enum value, a missing required field fails here as
   it would fail `kubectl apply`.
2. Consistency, what no schema can say: every pool's `jwks_cluster` is the name Envoy
   Gateway gives the cluster of an HTTPRoute rule of the same set
   (`httproute/<namespace>/<name>/rule/<index>`, see cognito-backend.yaml) whose only
   backend is a Backend reaching the host of the pool's JWKS URI on 443 with verified TLS,
   and which matches the JWKS path; no Wasm extension fails open; rootID is the filter's;
   the module is pinned by sha256.
3. Meaning: each Wasm `config` goes to the built filter in real Envoy, rendered the way
   Envoy Gateway renders it (internal/xds/translator/wasm.go: `configuration` is the config
   as JSON in a StringValue, `root_id` is rootID, `vm_id` and the plugin name
   `envoyextensionpolicy/<namespace>/<name>/wasm/<index>`, fail_open from failOpen), whose
   own parser accepts or refuses it.

Usage: validate.py [--no-envoy] [FILE.yaml ...]   (default: every envoy/gateway/*.yaml)
Exit status 0 when everything passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "istio"))
sys.path.insert(0, str(ROOT / "tests" / "crds"))
import check_plugin_config  # noqa: E402  (renders bootstraps, runs envoy --mode validate)
import upstream_schemas  # noqa: E402

ROOT_ID = "cognito_authorizer"
BACKEND_GROUP = "gateway.envoyproxy.io"
STRING_VALUE_TYPE = "type.googleapis.com/google.protobuf.StringValue"


Check = check_plugin_config.Check


def namespace(doc: dict) -> str:
    return (doc.get("metadata") or {}).get("namespace") or "default"


def name(doc: dict) -> str:
    return (doc.get("metadata") or {}).get("name") or ""


# ---------------------------------------------------------------------------------------
# Envoy Gateway's names (internal/gatewayapi/helpers.go).


def route_rule_cluster(route: dict, rule_index: int) -> str:
    """irRouteDestinationName: the cluster of one HTTPRoute rule."""
    return f"httproute/{namespace(route)}/{name(route)}/rule/{rule_index}"


def wasm_plugin_name(policy: dict, index: int) -> str:
    """irConfigNameForWasm: the Wasm filter's name and vm_id."""
    return f"envoyextensionpolicy/{namespace(policy)}/{name(policy)}/wasm/{index}"


# ---------------------------------------------------------------------------------------
# Layer 2: consistency.


@dataclass
class JwksCluster:
    host: str  # the Backend's FQDN, TLS verified against it
    paths: list[tuple[str, str]]  # (match type, value) of the rule's path matches
    problems: list[str]  # why a callout through it would fail or be unsafe


def backend_problems(backend: dict) -> tuple[str | None, list[str]]:
    """(FQDN, problems) of a Backend used for JWKS callouts."""
    spec = backend.get("spec") or {}
    endpoints = spec.get("endpoints") or []
    fqdns = [e.get("fqdn") for e in endpoints if isinstance(e, dict) and e.get("fqdn")]
    where = f"Backend {namespace(backend)}/{name(backend)}"
    if len(fqdns) != 1 or len(endpoints) != 1:
        return None, [f"{where}: must have exactly one endpoint, an fqdn (the Cognito host)"]
    host, port = fqdns[0].get("hostname"), fqdns[0].get("port")
    problems = []
    if port != 443:
        problems.append(f"{where}: port {port}, Cognito answers HTTPS on 443")
    tls = spec.get("tls")
    if not isinstance(tls, dict):
        problems.append(f"{where}: no tls, the keys would be fetched in clear text (Cognito refuses it)")
    else:
        if tls.get("insecureSkipVerify"):
            problems.append(f"{where}: tls.insecureSkipVerify lets anyone on the path serve the keys")
        if not tls.get("wellKnownCACertificates") and not tls.get("caCertificateRefs"):
            problems.append(f"{where}: tls needs wellKnownCACertificates: System (or caCertificateRefs)")
        if tls.get("sni") != host:
            problems.append(f"{where}: tls.sni must be {host!r} (the callout has no downstream name; "
                            "Envoy Gateway checks the certificate against the SNI)")
    return host, problems


def jwks_clusters(docs: list[dict]) -> dict[str, JwksCluster]:
    """Cluster name → what it reaches, for every HTTPRoute rule whose only backend is a
    Backend of the set."""
    backends = {(namespace(d), name(d)): d for d in docs if d.get("kind") == "Backend"}
    clusters = {}
    for route in (d for d in docs if d.get("kind") == "HTTPRoute"):
        for i, rule in enumerate((route.get("spec") or {}).get("rules") or []):
            refs = rule.get("backendRefs") or []
            if len(refs) != 1 or refs[0].get("kind") != "Backend" or refs[0].get("group") != BACKEND_GROUP:
                continue
            ref = refs[0]
            backend = backends.get((ref.get("namespace") or namespace(route), ref.get("name")))
            if backend is None:
                continue
            host, problems = backend_problems(backend)
            paths = [((m.get("path") or {}).get("type", "PathPrefix"), (m.get("path") or {}).get("value", "/"))
                     for m in rule.get("matches") or [{}]]
            if (rule.get("filters") or []) or (ref.get("filters") or []):
                problems.append(f"HTTPRoute {name(route)} rule {i}: filters change what the cluster gets; "
                                "keep the JWKS rule plain")
            clusters[route_rule_cluster(route, i)] = JwksCluster(host or "", paths, problems)
    return clusters


def jwks_uri(pool: dict) -> str | None:
    """The pool's JWKS URI, as the filter derives it (README "Configuration reference")."""
    if isinstance(pool.get("jwks_uri"), str):
        return pool["jwks_uri"]
    issuer = pool.get("issuer")
    pool_id = pool.get("user_pool_id")
    if not isinstance(issuer, str) and isinstance(pool_id, str) and "_" in pool_id:
        issuer = f"https://cognito-idp.{pool_id.split('_', 1)[0]}.amazonaws.com/{pool_id}"
    return f"{issuer}/.well-known/jwks.json" if isinstance(issuer, str) else None


def path_matches(paths: list[tuple[str, str]], path: str) -> bool:
    for kind, value in paths:
        if kind == "Exact" and path == value:
            return True
        if kind == "PathPrefix" and (value == "/" or path == value or path.startswith(value.rstrip("/") + "/")):
            return True
    return False


def wasm_entries(policy: dict) -> list[tuple[int, dict]]:
    return [(i, w) for i, w in enumerate((policy.get("spec") or {}).get("wasm") or []) if isinstance(w, dict)]


def consistency_problems(policy: dict, clusters: dict[str, JwksCluster]) -> list[str]:
    problems = []
    known = ", ".join(sorted(clusters)) or "none"
    for i, wasm in wasm_entries(policy):
        where = f"spec.wasm[{i}]"
        if wasm.get("failOpen") is True:
            problems.append(f"{where}.failOpen: true lets requests through unauthenticated when the module "
                            "cannot load; an authorizer must fail closed")
        if wasm.get("rootID") != ROOT_ID:
            problems.append(f"{where}.rootID: must be {ROOT_ID!r}, the filter's root id")
        code = wasm.get("code") or {}
        source = code.get({"Image": "image", "HTTP": "http"}.get(code.get("type"), "")) or {}
        if not source.get("sha256"):
            problems.append(f"{where}.code: sha256 required, the module would not be pinned")
        config = wasm.get("config")
        if not isinstance(config, dict):
            problems.append(f"{where}.config: the filter's configuration (a mapping) is required")
            continue
        for j, pool in enumerate(config.get("user_pools") or []):
            if not isinstance(pool, dict):
                continue
            at = f"{where}.config.user_pools[{j}].jwks_cluster"
            cluster = clusters.get(pool.get("jwks_cluster"))
            uri = urlsplit(jwks_uri(pool) or "")
            if cluster is None:
                problems.append(f"{at}: {pool.get('jwks_cluster')!r} is not the cluster of an HTTPRoute rule "
                                f"to a Backend in this set ({known}); see cognito-backend.yaml")
                continue
            if cluster.host != uri.hostname:
                problems.append(f"{at}: reaches {cluster.host!r}, the pool's keys are at {uri.hostname!r}")
            if not path_matches(cluster.paths, uri.path):
                problems.append(f"{at}: its rule does not match the pool's JWKS path {uri.path!r}: "
                                "Envoy Gateway would leave the rule out")
            problems += [f"{at}: {p}" for p in cluster.problems]
    return problems


# ---------------------------------------------------------------------------------------
# Layer 3: the filter in Envoy.


def wasm_filter(policy: dict, index: int, wasm: dict, module: Path) -> tuple[dict, str]:
    """The Envoy HTTP filter Envoy Gateway builds from one Wasm entry (module: the built one)."""
    plugin = wasm_plugin_name(policy, index)
    # Kubernetes stores `config` as JSON; Envoy Gateway passes its raw bytes on.
    config_json = json.dumps(wasm.get("config"), separators=(",", ":"), ensure_ascii=False)
    config = {
        "name": wasm.get("name") or plugin,
        "root_id": wasm.get("rootID") or "",
        "vm_config": {"vm_id": plugin, "runtime": "envoy.wasm.runtime.v8",
                      "code": {"local": {"filename": str(module)}}},
        "configuration": {"@type": STRING_VALUE_TYPE, "value": config_json},
        # Always closed here: a refused configuration must fail this check.
        "failure_policy": "FAIL_CLOSED",
    }
    return {"name": plugin, "typed_config": {"@type": check_plugin_config.WASM_FILTER_TYPE, "config": config}}, config_json


def envoy_checks(docs: list[tuple[str, dict]]) -> list[Check]:
    module = check_plugin_config.find_wasm()
    jobs = []
    for label, doc in docs:
        if doc.get("kind") != "EnvoyExtensionPolicy":
            continue
        for i, wasm in wasm_entries(doc):
            http_filter, config_json = wasm_filter(doc, i, wasm, module)
            clusters = check_plugin_config._pool_clusters(config_json)
            jobs.append((f"{label}: wasm[{i}].config accepted by the filter in Envoy",
                         check_plugin_config.render_bootstrap(http_filter, clusters)))
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(lambda j: check_plugin_config.envoy_validate(j[1]), jobs))
    return [Check(label, [] if ok else [log or "refused"]) for (label, _), (ok, log) in zip(jobs, outcomes)]


# ---------------------------------------------------------------------------------------


def run(paths: list[Path], envoy: bool = True) -> list[Check]:
    docs: list[tuple[str, dict]] = []
    checks: list[Check] = []
    for path in paths:
        try:
            docs += check_plugin_config.load_documents(path)
        except yaml.YAMLError as e:
            checks.append(Check(f"{path}: YAML", [str(e)]))
    shapes = upstream_schemas.problems(docs)
    checks += [Check(f"{label}: upstream schema", shapes[label]) for label, _ in docs]
    clusters = jwks_clusters([d for _, d in docs])
    checks += [Check(f"{label}: JWKS cluster, TLS and failure policy", consistency_problems(d, clusters))
               for label, d in docs if d.get("kind") == "EnvoyExtensionPolicy"]
    if envoy:
        checks += envoy_checks(docs)
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="YAML files (default: envoy/gateway/*.yaml)")
    parser.add_argument("--no-envoy", action="store_true", help="skip the checks in Envoy (layer 3)")
    args = parser.parse_args(argv)
    files = args.files or sorted(p.relative_to(ROOT) for p in (ROOT / "envoy" / "gateway").glob("*.yaml"))
    if not files:
        print("no files to validate", file=sys.stderr)
        return 1
    checks = run(files, envoy=not args.no_envoy)
    return check_plugin_config.report(checks, "gateway")


if __name__ == "__main__":
    sys.exit(main())
