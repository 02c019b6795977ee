"""The default build carries RSA only (RS256/384/512, PS256/384/512): ES256, ES384 and EdDSA
are cargo features (`ecdsa`, `eddsa`, `all-algorithms`; README, "Algorithms"). With the
default module in real Envoy: it says at start which algorithms it carries; JWKS keys that
only an algorithm it lacks could use are skipped with a warning naming the key, while the
RSA key of the same JWKS is used; tokens of those algorithms are refused as invalid (401,
`alg_not_allowed`), before any key lookup — so they trigger no JWKS refetch — and never
reach the upstream, even though Envoy's own crypto could check ES256.

The all-algorithms build is exercised on every algorithm by test_signature_backends.py,
test_differential_jwt_authn.py and test_adversarial.py."""

from __future__ import annotations

import pytest

from support import mutations as mu
from support import tokens as tk
from support.assertions import Outcomes, assert_allowed, assert_invalid
from support.authorizer_config import (
    TEST_CLIENT,
    TEST_CLUSTER,
    TEST_ISSUER,
    self_minted_pool,
)
from support.envoy import refusal_reasons_since, settled_log_size
from support.jwks_server import JwksServer
from support.polling import wait_until
from support.scenarios import bearer

NOT_BUILT_IN = {"ES256": "P-256", "ES384": "P-384", "EdDSA": "Ed25519"}
RSA_BUILT_IN = "(built in: RS256, RS384, RS512, PS256, PS384, PS512)"


@pytest.fixture(scope="module")
def keys() -> dict[str, mu.Key]:
    return {family: mu.Key.generate(family) for family in ("RSA", "P-256", "P-384", "Ed25519")}


@pytest.fixture(scope="module")
def world(module_envoys, keys):
    """(envoy, jwks server): the default module, a JWKS with an RSA key and one key of each
    curve (named `feat-<alg>`; the Ed25519 key without `alg`)."""
    jwks = {
        "keys": [
            keys["RSA"].jwk("feat-RS256", "RS256"),
            keys["P-256"].jwk("feat-ES256", "ES256"),
            keys["P-384"].jwk("feat-ES384", "ES384"),
            keys["Ed25519"].jwk("feat-EdDSA"),
        ]
    }
    server = JwksServer(jwks)
    try:
        envoy = module_envoys(
            {"user_pools": [self_minted_pool()]}, {TEST_CLUSTER: server.port}, name="default-build"
        )
        yield envoy, server
    finally:
        server.stop()


def _token(keys, alg: str, sub: str) -> str:
    family = "RSA" if alg.startswith(("RS", "PS")) else NOT_BUILT_IN[alg]
    claims = tk.id_claims(TEST_ISSUER, TEST_CLIENT, sub, sub=sub)
    return mu.jws(keys[family], f"feat-{alg}", claims, alg)


def test_default_build_says_it_carries_rsa_only(world):
    envoy, _ = world

    log = envoy.log_text()

    assert (
        f"signatures: RSA by host crypto, ECDSA not built in, others by the module {RSA_BUILT_IN}"
    ) in log


def test_keys_of_algorithms_not_built_in_are_skipped_with_a_warning_and_rsa_is_used(
    world, keys, upstream
):
    envoy, _ = world

    # A request that needs the keys waits for the first fetch.
    assert_allowed(envoy.request("/feat", bearer(_token(keys, "RS256", "alice"))), upstream)

    log = wait_until(
        lambda: next((t for t in [envoy.log_text()] if "loaded JWKS" in t), None),
        5,
        "the JWKS log lines",
    )
    for i, alg in enumerate(NOT_BUILT_IN, start=1):
        assert (
            f'JWKS key skipped: key {i}: kid "feat-{alg}": {alg} is not built into this module'
            " (it verifies RS256, RS384, RS512, PS256, PS384, PS512)"
        ) in log, alg
    assert "loaded JWKS with kids [feat-RS256]" in log


@pytest.mark.parametrize("alg", list(NOT_BUILT_IN))
def test_valid_token_of_an_algorithm_not_built_in_is_refused_as_invalid_without_refetch(
    world, keys, upstream, alg
):
    envoy, server = world
    token = _token(keys, alg, f"sub-{alg}")
    fetches = server.hits()
    outcomes = Outcomes(envoy)
    mark = settled_log_size(envoy)

    resp = envoy.request("/feat", bearer(token))

    assert_invalid(resp, upstream)
    assert outcomes.changes() == {"denied_invalid": 1}
    assert refusal_reasons_since(envoy, mark, 1) == ["alg_not_allowed"]
    # Refused before any key lookup: no unknown-kid refetch.
    assert server.hits() == fetches
