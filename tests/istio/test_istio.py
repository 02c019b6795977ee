"""The Istio resources we ship are valid, and validate.py catches the mistakes users make.

Each negative test copies a shipped file, changes one thing, and asserts the exact
complaint, so a validator that stops checking something fails here.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ISTIO = ROOT / "envoy" / "istio"
sys.path.insert(0, str(HERE))

import check_plugin_config  # noqa: E402
import validate  # noqa: E402


def shipped(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((ISTIO / name).read_text()) if d]


def write(tmp_path: Path, name: str, docs: list[dict]) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def problems(checks, suffix: str) -> list[str]:
    return [p for c in checks if c.label.endswith(suffix) for p in c.problems]


def test_shipped_files_pass_every_check_through_the_command_line():
    proc = subprocess.run([sys.executable, str(HERE / "validate.py")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAIL" not in proc.stdout
    assert re.fullmatch(r"istio: \d+ passed, 0 failed", proc.stdout.strip().splitlines()[-1])
    # Each shipped plugin went through the filter in Envoy.
    for name in ("wasmplugin.yaml", "wasmplugin-gateway.yaml", "envoyfilter.yaml"):
        assert re.search(rf"^ok +envoy/istio/{name} .*accepted by the filter in Envoy$", proc.stdout, re.M), name


def test_every_kind_shipped_has_a_schema_and_is_checked():
    kinds = {d["kind"] for f in ISTIO.glob("*.yaml") for d in shipped(f.name)}
    assert kinds == set(validate.KIND_SCHEMAS)


def test_envoy_spelling_of_fail_closed_in_a_wasmplugin_is_caught(tmp_path):
    [doc] = shipped("wasmplugin.yaml")
    doc["spec"]["failStrategy"] = "FAIL_CLOSED"  # Envoy's spelling; Istio's is FAIL_CLOSE
    path = write(tmp_path, "wasmplugin.yaml", [doc])
    assert validate.main(["--no-envoy", str(path), str(ISTIO / "serviceentry.yaml")]) == 1
    assert problems(validate.run([path], envoy=False), ": schema") == [
        "spec.failStrategy: 'FAIL_CLOSED' is not one of ['FAIL_CLOSE', 'FAIL_OPEN', 'FAIL_RELOAD']"
    ]


@pytest.mark.parametrize(
    "where, typo, expected",
    [
        ("spec", "pluginconfig", "spec: Additional properties are not allowed ('pluginconfig' was unexpected)"),
        ("spec.selector", "matchLabel", "spec.selector: Additional properties are not allowed ('matchLabel' was unexpected)"),
        ("metadata", "namepsace", "metadata: Additional properties are not allowed ('namepsace' was unexpected)"),
    ],
)
def test_unknown_wasmplugin_fields_are_caught(tmp_path, where, typo, expected):
    [doc] = shipped("wasmplugin.yaml")
    target = doc
    for key in where.split("."):
        target = target[key]
    target[typo] = {}
    path = write(tmp_path, "wasmplugin.yaml", [doc])
    assert problems(validate.run([path], envoy=False), ": schema") == [expected]


def test_selector_and_target_refs_together_are_caught(tmp_path):
    [doc] = shipped("wasmplugin-gateway.yaml")
    doc["spec"]["targetRefs"] = [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "gw"}]
    path = write(tmp_path, "gw.yaml", [doc])
    [problem] = problems(validate.run([path], envoy=False), ": schema")
    assert problem.startswith("spec: ") and "should not be valid" in problem


def test_destination_rule_tls_typo_is_caught(tmp_path):
    se, dr = shipped("serviceentry.yaml")
    dr["spec"]["trafficPolicy"]["portLevelSettings"][0]["tls"]["mode"] = "TLS"
    path = write(tmp_path, "serviceentry.yaml", [se, dr])
    assert problems(validate.run([path], envoy=False), ": schema") == [
        "spec.trafficPolicy.portLevelSettings[0].tls.mode: 'TLS' is not one of "
        "['DISABLE', 'SIMPLE', 'MUTUAL', 'ISTIO_MUTUAL']"
    ]


def test_envoyfilter_context_typo_is_caught(tmp_path):
    docs = shipped("envoyfilter.yaml")
    docs[0]["spec"]["configPatches"][0]["match"]["context"] = "SIDECAR_INBOUNDS"
    path = write(tmp_path, "envoyfilter.yaml", docs)
    [problem] = problems(validate.run([path], envoy=False), ": schema")
    assert problem.startswith("spec.configPatches[0].match.context: 'SIDECAR_INBOUNDS' is not one of")


def test_jwks_cluster_without_tls_origination_is_caught(tmp_path):
    # outbound|443|| exists for the HTTPS port, but that port is the applications' own TLS:
    # a plain-HTTP callout there would reach Cognito's 443 unencrypted and fail.
    [doc] = shipped("wasmplugin.yaml")
    doc["spec"]["pluginConfig"]["user_pools"][0]["jwks_cluster"] = "outbound|443||cognito-idp.us-east-1.amazonaws.com"
    path = write(tmp_path, "wasmplugin.yaml", [doc])
    [problem] = problems(validate.run([path, ISTIO / "serviceentry.yaml"], envoy=False), "failure policy")
    assert problem.startswith(
        "spec.pluginConfig.user_pools[0].jwks_cluster: 'outbound|443||cognito-idp.us-east-1.amazonaws.com' "
        "is not a cluster with TLS origination to 'cognito-idp.us-east-1.amazonaws.com'"
    )


def test_pool_in_another_region_needs_its_own_service_entry(tmp_path):
    [doc] = shipped("wasmplugin.yaml")
    doc["spec"]["pluginConfig"]["user_pools"][0]["user_pool_id"] = "eu-west-1_AbCdEf123"
    path = write(tmp_path, "wasmplugin.yaml", [doc])
    [problem] = problems(validate.run([path, ISTIO / "serviceentry.yaml"], envoy=False), "failure policy")
    assert "TLS origination to 'cognito-idp.eu-west-1.amazonaws.com'" in problem


def test_fail_open_is_refused(tmp_path):
    [doc] = shipped("wasmplugin.yaml")
    doc["spec"]["failStrategy"] = "FAIL_OPEN"
    path = write(tmp_path, "wasmplugin.yaml", [doc])
    [problem] = problems(validate.run([path, ISTIO / "serviceentry.yaml"], envoy=False), "failure policy")
    assert problem.startswith("spec.failStrategy: FAIL_OPEN lets requests through unauthenticated")


def test_unknown_plugin_config_key_is_refused_by_the_filter_in_envoy(tmp_path):
    [doc] = shipped("wasmplugin.yaml")
    doc["spec"]["pluginConfig"]["user_pools"][0]["userpool_id"] = "typo"
    path = write(tmp_path, "wasmplugin.yaml", [doc])
    [envoy_check] = [c for c in validate.run([path], envoy=True) if c.label.endswith("accepted by the filter in Envoy")]
    assert not envoy_check.ok
    # The filter's own line names the key at fault.
    assert "invalid configuration at user_pools[0].userpool_id: unknown field `userpool_id`" in envoy_check.problems[0]


def test_bad_envoyfilter_configuration_is_refused_by_the_filter_in_envoy(tmp_path):
    docs = shipped("envoyfilter.yaml")
    conf = docs[0]["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"]["configuration"]
    conf["value"] = conf["value"].replace('"rules": [', '"mode": "audit", "rules": [')
    path = write(tmp_path, "envoyfilter.yaml", docs)
    checks = [c for c in validate.run([path], envoy=True) if "configPatches[0]" in c.label]
    as_written, with_module = checks
    # Validate mode does not download remote code, so only the second check can see this.
    assert as_written.ok
    assert not with_module.ok
    assert "invalid configuration at mode" in with_module.problems[0]


def test_plugin_config_reaches_the_filter_as_istio_serialises_a_struct():
    # Every number in a protobuf Struct is a double; istiod writes integral ones without a
    # fraction, which our parser's integer fields require.
    assert check_plugin_config.istio_struct_json(
        {"clock_skew_seconds": 60, "jwks_max_stale_seconds": 86400, "x": 1.5, "big": 1e21, "tiny": 1.5e-7,
         "flags": [True, None], "nested": {"n": 0}}
    ) == ('{"clock_skew_seconds":60,"jwks_max_stale_seconds":86400,"x":1.5,"big":1e+21,"tiny":1.5e-7,'
          '"flags":[true,null],"nested":{"n":0}}')


# --- Istio's own CRD schemas (tests/crds) --------------------------------------------------


def test_every_shipped_document_is_checked_against_istios_own_schema():
    checks = validate.run(sorted(ISTIO.glob("*.yaml")), envoy=False)
    upstream = [c for c in checks if c.label.endswith(": upstream schema")]
    assert len(upstream) == sum(len(shipped(f.name)) for f in ISTIO.glob("*.yaml"))
    assert all(c.ok for c in upstream), [c.problems for c in upstream if not c.ok]


@pytest.mark.parametrize(
    "name, mutate, expected",
    [
        ("wasmplugin.yaml", lambda d: d["spec"].update(pluginconfig={}),
         "spec.pluginconfig: unknown field pluginconfig (the upstream schema has no such field)"),
        ("wasmplugin.yaml", lambda d: d["spec"].update(priority="high"), "spec.priority: must be integer"),
        ("wasmplugin.yaml", lambda d: d["spec"]["match"][0]["ports"][0].pop("number"),
         "spec.match[0].ports[0]: required field number is missing"),
        ("serviceentry.yaml", lambda d: d["spec"].pop("hosts"), "spec: required field hosts is missing"),
        ("serviceentry.yaml", lambda d: d["spec"]["ports"][0].update(targetport=443),
         "spec.ports[0].targetport: unknown field targetport (the upstream schema has no such field)"),
        ("envoyfilter.yaml", lambda d: d["spec"]["configPatches"][0]["patch"].update(operation="INSERT_AFTER_ROUTER"),
         "spec.configPatches[0].patch.operation: must be equal to one of the allowed values (INVALID, MERGE, "
         "ADD, REMOVE, INSERT_BEFORE, INSERT_AFTER, INSERT_FIRST, REPLACE)"),
    ],
)
def test_istio_schema_faults_are_caught_by_the_upstream_schema(tmp_path, name, mutate, expected):
    docs = shipped(name)
    mutate(docs[0])
    path = write(tmp_path, name, docs)
    found = problems(validate.run([path], envoy=False), ": upstream schema")
    assert expected in found, found


def test_an_authorization_policy_on_a_header_the_plugin_does_not_set_is_caught(tmp_path):
    [policy] = shipped("authorizationpolicy.yaml")
    policy["spec"]["rules"][0]["when"][0]["key"] = "request.headers[x-cognito-tenant]"
    path = write(tmp_path, "authorizationpolicy.yaml", [policy])
    checks = validate.run([path, ISTIO / "wasmplugin.yaml"], envoy=False)
    [problem] = problems(checks, ": identity headers")
    assert problem.startswith("spec.rules[0].when[0].key: 'x-cognito-tenant' is not set by a WasmPlugin")
    # Without the WasmPlugin of the same workloads, none of its headers can be trusted.
    assert len(problems(validate.run([ISTIO / "authorizationpolicy.yaml"], envoy=False),
                        ": identity headers")) == 4  # fmt: skip


def test_a_typo_in_an_authorization_policy_is_caught_by_our_schema(tmp_path):
    """Inside `spec`, the upstream declarations type AuthorizationPolicy as an intersection
    with a union (its selector/targetRef alternatives), where TypeScript's check for unknown
    fields does not reach: a misspelt `notMethods` passes the upstream check (a wrong type
    does not). Our schema is strict there (tests/crds/README.md)."""
    [policy] = shipped("authorizationpolicy.yaml")
    operation = policy["spec"]["rules"][0]["to"][0]["operation"]
    operation["notMethod"] = operation.pop("notMethods")
    path = write(tmp_path, "authorizationpolicy.yaml", [policy])
    checks = validate.run([path, ISTIO / "wasmplugin.yaml"], envoy=False)
    assert problems(checks, ": schema") == [
        "spec.rules[0].to[0].operation: Additional properties are not allowed ('notMethod' was unexpected)"
    ]
    assert problems(checks, ": upstream schema") == []
    operation["notMethods"] = "GET"
    checks = validate.run([write(tmp_path, "authorizationpolicy.yaml", [policy])], envoy=False)
    assert any("notMethods: must be array" in p for p in problems(checks, ": upstream schema"))
