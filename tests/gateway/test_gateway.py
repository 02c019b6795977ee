"""The Envoy Gateway resources we ship are valid, and validate.py catches the mistakes users make.

Each negative test copies the shipped files, changes one thing, and asserts the exact
complaint, so a validator that stops checking something fails here.
"""

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GATEWAY = ROOT / "envoy" / "gateway"
sys.path.insert(0, str(HERE))

import validate  # noqa: E402

FILES = ("cognito-backend.yaml", "envoyextensionpolicy.yaml", "envoyextensionpolicy-gateway.yaml")


def shipped() -> dict[str, list[dict]]:
    return {f: [d for d in yaml.safe_load_all((GATEWAY / f).read_text()) if d] for f in FILES}


def write_all(tmp_path: Path, sets: dict[str, list[dict]]) -> list[Path]:
    paths = []
    for f, docs in sets.items():
        path = tmp_path / f
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        paths.append(path)
    return paths


def problems(checks, suffix: str) -> list[str]:
    return [p for c in checks if c.label.endswith(suffix) for p in c.problems]


def policy(sets) -> dict:
    return sets["envoyextensionpolicy.yaml"][0]


def test_shipped_files_pass_every_check_through_the_command_line():
    proc = subprocess.run([sys.executable, str(HERE / "validate.py")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAIL" not in proc.stdout
    assert re.fullmatch(r"gateway: \d+ passed, 0 failed", proc.stdout.strip().splitlines()[-1])
    for f in FILES:
        for doc in shipped()[f]:
            assert re.search(rf"^ok +envoy/gateway/{f} .*{doc['kind']}/{doc['metadata']['name']}: upstream schema$",
                             proc.stdout, re.M), (f, doc["kind"])
    for f in ("envoyextensionpolicy.yaml", "envoyextensionpolicy-gateway.yaml"):
        assert re.search(rf"^ok +envoy/gateway/{f} .*wasm\[0\]\.config accepted by the filter in Envoy$",
                         proc.stdout, re.M), f


def test_every_kind_shipped_is_checked_against_an_upstream_schema():
    kinds = {d["kind"] for docs in shipped().values() for d in docs}
    assert kinds == {"EnvoyExtensionPolicy", "Backend", "HTTPRoute"}


# --- layer 1: the upstream schemas -----------------------------------------------------


@pytest.mark.parametrize(
    "mutate, expected",
    [
        # An unknown field (Istio's spelling of the root id, in Envoy Gateway's API).
        (lambda s: policy(s)["spec"]["wasm"][0].update(rootId="x"),
         "spec.wasm[0].rootId: unknown field rootId (the upstream schema has no such field)"),
        # A wrong enum value.
        (lambda s: policy(s)["spec"]["wasm"][0]["code"].update(type="OCI"),
         "spec.wasm[0].code.type: Type '\"OCI\"' is not assignable to type 'IWasmCodeSourceType'."),
        # A wrong type.
        (lambda s: policy(s)["spec"]["wasm"][0].update(failOpen="false"),
         "spec.wasm[0].failOpen: must be boolean"),
        # A missing required field.
        (lambda s: policy(s)["spec"]["wasm"][0]["code"]["image"].pop("url"),
         "spec.wasm[0].code.image: required field url is missing"),
        # Unknown fields in the Backend and in the HTTPRoute.
        (lambda s: s["cognito-backend.yaml"][0]["spec"]["tls"].update(caCertificates="system"),
         "spec.tls.caCertificates: unknown field caCertificates (the upstream schema has no such field)"),
        (lambda s: s["cognito-backend.yaml"][1]["spec"]["rules"][0].update(backendRef=[]),
         "spec.rules[0].backendRef: unknown field backendRef (the upstream schema has no such field)"),
    ],
    ids=["unknown-field", "enum", "type", "required", "backend-field", "httproute-field"],
)
def test_schema_faults_are_caught(tmp_path, mutate, expected):
    sets = shipped()
    mutate(sets)
    found = problems(validate.run(write_all(tmp_path, sets), envoy=False), ": upstream schema")
    assert expected in found, found


def test_a_kind_without_an_upstream_schema_is_refused(tmp_path):
    sets = shipped()
    sets["cognito-backend.yaml"][0]["kind"] = "Backends"
    found = problems(validate.run(write_all(tmp_path, sets), envoy=False), ": upstream schema")
    assert found == ["(document): gateway.envoyproxy.io/v1alpha1 Backends: the upstream schemas have no such kind"]


# --- layer 2: Envoy Gateway's cluster name, TLS, failure policy --------------------------

CLUSTER = "httproute/my-namespace/cognito-jwks-us-east-1/rule/0"


def test_the_jwks_cluster_is_named_as_envoy_gateway_names_a_route_rule():
    sets = shipped()
    route = sets["cognito-backend.yaml"][1]
    assert validate.route_rule_cluster(route, 0) == CLUSTER
    for f in ("envoyextensionpolicy.yaml", "envoyextensionpolicy-gateway.yaml"):
        assert sets[f][0]["spec"]["wasm"][0]["config"]["user_pools"][0]["jwks_cluster"] == CLUSTER


@pytest.mark.parametrize(
    "cluster",
    [
        "outbound|80||cognito-idp.us-east-1.amazonaws.com",  # Istio's name
        "httproute/my-namespace/cognito-jwks-us-east-1/rule/1",  # no such rule
        "httproute/default/cognito-jwks-us-east-1/rule/0",  # another namespace
        "backend/my-namespace/cognito-idp-us-east-1/443",  # the mergeBackends name
    ],
)
def test_a_jwks_cluster_envoy_gateway_does_not_create_is_caught(tmp_path, cluster):
    sets = shipped()
    policy(sets)["spec"]["wasm"][0]["config"]["user_pools"][0]["jwks_cluster"] = cluster
    found = problems(validate.run(write_all(tmp_path, sets), envoy=False), ": JWKS cluster, TLS and failure policy")
    assert found == [f"spec.wasm[0].config.user_pools[0].jwks_cluster: {cluster!r} is not the cluster of an "
                     f"HTTPRoute rule to a Backend in this set ({CLUSTER}); see cognito-backend.yaml"]


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda b, r: b["spec"].pop("tls"),
         "no tls, the keys would be fetched in clear text (Cognito refuses it)"),
        (lambda b, r: b["spec"]["tls"].update(insecureSkipVerify=True),
         "tls.insecureSkipVerify lets anyone on the path serve the keys"),
        (lambda b, r: b["spec"]["tls"].pop("sni"),
         "tls.sni must be 'cognito-idp.us-east-1.amazonaws.com' (the callout has no downstream name; "
         "Envoy Gateway checks the certificate against the SNI)"),
        (lambda b, r: b["spec"]["endpoints"][0]["fqdn"].update(port=80), "port 80, Cognito answers HTTPS on 443"),
    ],
)
def test_unsafe_jwks_backends_are_caught(tmp_path, mutate, expected):
    sets = shipped()
    backend, route = sets["cognito-backend.yaml"]
    mutate(backend, route)
    found = problems(validate.run(write_all(tmp_path, sets), envoy=False), ": JWKS cluster, TLS and failure policy")
    assert f"spec.wasm[0].config.user_pools[0].jwks_cluster: Backend my-namespace/cognito-idp-us-east-1: {expected}" in found


def test_a_backend_in_another_region_or_a_rule_for_another_pool_is_caught(tmp_path):
    sets = shipped()
    policy(sets)["spec"]["wasm"][0]["config"]["user_pools"][0]["user_pool_id"] = "eu-west-1_AbCdEf123"
    found = problems(validate.run(write_all(tmp_path, sets), envoy=False), ": JWKS cluster, TLS and failure policy")
    assert found == [
        "spec.wasm[0].config.user_pools[0].jwks_cluster: reaches 'cognito-idp.us-east-1.amazonaws.com', "
        "the pool's keys are at 'cognito-idp.eu-west-1.amazonaws.com'",
        "spec.wasm[0].config.user_pools[0].jwks_cluster: its rule does not match the pool's JWKS path "
        "'/eu-west-1_AbCdEf123/.well-known/jwks.json': Envoy Gateway would leave the rule out",
    ]


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda w: w.update(failOpen=True),
         "spec.wasm[0].failOpen: true lets requests through unauthenticated when the module cannot load; "
         "an authorizer must fail closed"),
        (lambda w: w.update(rootID="cognito"), "spec.wasm[0].rootID: must be 'cognito_authorizer', the filter's root id"),
        (lambda w: w["code"]["image"].pop("sha256"), "spec.wasm[0].code: sha256 required, the module would not be pinned"),
    ],
)
def test_fail_open_wrong_root_id_and_unpinned_modules_are_caught(tmp_path, mutate, expected):
    sets = shipped()
    mutate(policy(sets)["spec"]["wasm"][0])
    found = problems(validate.run(write_all(tmp_path, sets), envoy=False), ": JWKS cluster, TLS and failure policy")
    assert found == [expected]


# --- layer 3: the built filter in Envoy ----------------------------------------------------


def test_a_configuration_the_filter_refuses_fails_in_envoy(tmp_path):
    sets = shipped()
    pool = policy(sets)["spec"]["wasm"][0]["config"]["user_pools"][0]
    pool["userpool_id"] = pool.pop("user_pool_id")
    checks = validate.run(write_all(tmp_path, sets), envoy=True)
    [envoy_check] = [c for c in checks if "envoyextensionpolicy.yaml" in c.label and c.label.endswith("in Envoy")]
    assert not envoy_check.ok
    assert "invalid configuration at user_pools[0].userpool_id: unknown field `userpool_id`" in envoy_check.problems[0]
    # The other policy, unchanged, still passes.
    assert all(c.ok for c in checks if "envoyextensionpolicy-gateway.yaml" in c.label)


def test_the_filter_gets_the_configuration_as_envoy_gateway_renders_it():
    doc = copy.deepcopy(policy(shipped()))
    http_filter, config_json = validate.wasm_filter(doc, 0, doc["spec"]["wasm"][0], Path("/m.wasm"))
    config = http_filter["typed_config"]["config"]
    assert config["root_id"] == "cognito_authorizer"
    assert config["vm_config"]["vm_id"] == "envoyextensionpolicy/my-namespace/cognito-authorizer/wasm/0"
    assert config["failure_policy"] == "FAIL_CLOSED"
    # Integers stay integers (Kubernetes keeps JSON numbers as written).
    doc["spec"]["wasm"][0]["config"]["clock_skew_seconds"] = 60
    _, config_json = validate.wasm_filter(doc, 0, doc["spec"]["wasm"][0], Path("/m.wasm"))
    assert '"clock_skew_seconds":60' in config_json


def test_the_readme_securitypolicy_is_valid_for_envoy_gateway():
    sys.path.insert(0, str(ROOT / "tests" / "crds"))
    import upstream_schemas

    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    [policy_doc] = [d for b in blocks for d in yaml.safe_load_all(b) if isinstance(d, dict) and d.get("kind") == "SecurityPolicy"]
    assert upstream_schemas.problems([("readme", policy_doc)]) == {"readme": []}
    # The check sees a typo in it.
    policy_doc["spec"]["jwt"]["providers"][0]["audience"] = policy_doc["spec"]["jwt"]["providers"][0].pop("audiences")
    assert upstream_schemas.problems([("readme", policy_doc)])["readme"] == [
        "spec.jwt.providers[0].audience: unknown field audience (the upstream schema has no such field)"]
