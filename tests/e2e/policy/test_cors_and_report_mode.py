"""CORS (README "Behaviour") and report mode.

CORS: a preflight (`OPTIONS` with `Origin` and an `Access-Control-Request-Method` that is a
method) reaches the upstream without a token, and without any token source even when the
client sent one; `"cors_preflight": "answer"` answers it in the filter (204) on routes that
need a token; `"authenticate"` makes it need a token. Local replies carry
`access-control-allow-origin: <origin>` and `vary: origin` only for origins listed in
`cors_allow_origins` (or any origin with `"*"`).

Report mode (`"mode": "report"`): every request reaches the upstream with
`x-cognito-authorizer-decision: <reason>`, a client's own copy of that header never reaches
the upstream, and the counters count what would have been refused."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from support import tokens as tk
from support.assertions import (
    Outcomes,
    assert_allowed,
    assert_expired,
    assert_forbidden,
    assert_invalid,
    assert_missing,
)
from support.authorizer_config import (
    CLAIM_HEADERS,
    TEST_CLIENT,
    TEST_CLUSTER,
    TEST_ISSUER,
    jwks_uri,
    self_minted_only_config,
    self_minted_pool,
)
from support.polling import wait_until
from support.ports import free_port
from support.scenarios import PoolOutcomes, bearer, mint_id

APP = "https://app.example.com"
ADMIN_APP = "https://admin.example.com"
DECISION = "x-cognito-authorizer-decision"
ADMIN_RULES = [
    {"match": {"prefix": "/public"}, "allow": True},
    {"match": {"prefix": "/admin"}, "require": {"groups": ["admins"]}},
]
DOWN_POOL = "us-east-1_DownPool"


def preflight(origin: str | None = APP, method: str | None = "GET") -> dict:
    headers = {}
    if origin is not None:
        headers["Origin"] = origin
    if method is not None:
        headers["Access-Control-Request-Method"] = method
    return headers


@pytest.fixture(scope="module")
def cors(module_envoys, jwks):
    config = self_minted_only_config(cors_allow_origins=[APP, ADMIN_APP], rules=ADMIN_RULES)
    return module_envoys(config, {TEST_CLUSTER: jwks.port}, name="cors")


@pytest.fixture(scope="module")
def cors_answer(module_envoys, jwks):
    config = self_minted_only_config(
        cors_allow_origins=[APP], cors_preflight="answer", rules=ADMIN_RULES
    )
    return module_envoys(config, {TEST_CLUSTER: jwks.port}, name="cors-answer")


@pytest.fixture(scope="module")
def cors_authenticate(module_envoys, jwks):
    config = self_minted_only_config(cors_allow_origins=["*"], cors_preflight="authenticate")
    return module_envoys(config, {TEST_CLUSTER: jwks.port}, name="cors-authenticate")


REPORT_LOG_FORMAT = (
    "%REQ(:PATH)% %RESPONSE_CODE%"
    " decision=%FILTER_STATE(wasm.cognito_authorizer.decision:PLAIN)%"
    " reason=%FILTER_STATE(wasm.cognito_authorizer.reason:PLAIN)%\n"
)


@pytest.fixture(scope="module")
def report_log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("report-access-log") / "access.log"


@pytest.fixture(scope="module")
def report(module_envoys, jwks, report_log):
    """Report mode, with a second pool whose JWKS can never be fetched (nothing listens on
    its cluster's port), so that `unavailable` can be seen too."""
    config = {
        "user_pools": [
            self_minted_pool(),
            self_minted_pool(
                name="down",
                user_pool_id=DOWN_POOL,
                issuer=tk.cognito_issuer(DOWN_POOL),
                jwks_uri=jwks_uri(DOWN_POOL),
                jwks_cluster="down_jwks",
            ),
        ],
        "mode": "report",
        "rules": ADMIN_RULES,
        "claims_to_headers": CLAIM_HEADERS,
        "jwks_timeout_ms": 500,
    }
    access_log = [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": (
                    "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
                ),
                "path": str(report_log),
                "log_format": {"text_format_source": {"inline_string": REPORT_LOG_FORMAT}},
            },
        }
    ]
    return module_envoys(
        config,
        {TEST_CLUSTER: jwks.port, "down_jwks": free_port()},
        access_log=access_log,
        name="report",
    )


def send(envoy, upstream, path="/orders", headers=(), method="GET"):
    upstream.clear()
    return envoy.request(path, headers, method=method)


def expired_token(key) -> str:
    # payload: id token issued 3720 s ago, expired 120 s ago (beyond the 60 s skew)
    return tk.sign(key, tk.id_claims(TEST_ISSUER, TEST_CLIENT, now=int(time.time()) - 3720))


def assert_cors_headers(resp, origin: str) -> None:
    assert resp.header("access-control-allow-origin") == origin, resp.describe()
    assert resp.header("vary") == "origin", resp.describe()


def assert_no_cors_headers(resp) -> None:
    assert resp.header("access-control-allow-origin") is None, resp.describe()
    assert resp.header("vary") is None, resp.describe()


# --- preflights bypass (default) ---------------------------------------------------------


@pytest.mark.parametrize("path", ["/orders", "/admin/users"])
def test_preflight_without_token_reaches_upstream_by_default(cors, upstream, path):
    seen = assert_allowed(send(cors, upstream, path, preflight(), "OPTIONS"), upstream)

    assert seen.method == "OPTIONS"
    assert seen.header("origin") == APP
    assert seen.header("access-control-request-method") == "GET"


def test_preflight_from_unlisted_origin_also_reaches_upstream(cors, upstream):
    """Whether the origin may call the API is the CORS filter's / service's answer."""
    resp = send(cors, upstream, headers=preflight("https://other.example"), method="OPTIONS")

    assert_allowed(resp, upstream)


@pytest.mark.parametrize(
    "headers,cors_origin",
    [(preflight(method=None), APP), (preflight(origin=None), None)],
    ids=["no-request-method", "no-origin"],
)
def test_options_that_is_not_a_preflight_needs_a_token(cors, upstream, headers, cors_origin):
    resp = send(cors, upstream, headers=headers, method="OPTIONS")

    assert_missing(resp, upstream)
    if cors_origin:
        assert_cors_headers(resp, cors_origin)
    else:
        assert_no_cors_headers(resp)


def test_get_with_preflight_headers_is_not_a_preflight(cors, upstream):
    assert_missing(send(cors, upstream, headers=preflight()), upstream)


@pytest.mark.parametrize("method", ["GET, POST", "G T", "(GET)"])
def test_a_preflight_must_ask_for_a_method(cors, upstream, method):
    assert_missing(send(cors, upstream, headers=preflight(method=method), method="OPTIONS"), upstream)


def test_a_bypassed_preflight_carries_no_token_to_the_upstream(cors, upstream, signing_key):
    """A browser never sends credentials on a preflight; a client that does is not a browser,
    and an upstream handler that ignores the method must not receive them (README "Browser
    apps (CORS)")."""
    token = mint_id(signing_key, groups=["users"])
    headers = {**preflight(method="DELETE"), **bearer(token)}
    seen = assert_allowed(send(cors, upstream, "/admin/users", headers, "OPTIONS"), upstream)
    assert seen.header("authorization") is None
    assert seen.header("origin") == APP


# --- preflights answered by the filter ----------------------------------------------------


def test_an_answered_preflight_on_a_token_route_never_reaches_the_upstream(cors_answer, upstream):
    headers = {**preflight(method="DELETE"), "Access-Control-Request-Headers": "authorization"}
    resp = send(cors_answer, upstream, "/admin/users", headers, "OPTIONS")
    assert resp.status == 204, resp.describe()
    assert upstream.requests == []
    assert_cors_headers(resp, APP)
    assert resp.header("access-control-allow-methods") == "DELETE"
    assert resp.header("access-control-allow-headers") == "authorization"
    assert resp.header("access-control-max-age") == "600"


def test_an_answered_preflight_from_an_unlisted_origin_grants_nothing(cors_answer, upstream):
    resp = send(cors_answer, upstream, "/admin/users", preflight("https://other.example"), "OPTIONS")
    assert resp.status == 204, resp.describe()
    assert upstream.requests == []
    assert_no_cors_headers(resp)


def test_an_answered_preflight_on_an_anonymous_route_goes_on(cors_answer, upstream):
    seen = assert_allowed(send(cors_answer, upstream, "/public/x", preflight(), "OPTIONS"), upstream)
    assert seen.method == "OPTIONS"


# --- CORS headers on local replies -------------------------------------------------------


@pytest.mark.parametrize("origin", [APP, ADMIN_APP])
def test_401_missing_for_listed_origin_carries_cors_headers(cors, upstream, origin):
    resp = send(cors, upstream, headers={"Origin": origin})

    assert_missing(resp, upstream)
    assert_cors_headers(resp, origin)


def test_401_invalid_and_expired_for_listed_origin_carry_cors_headers(cors, upstream, signing_key):
    resp = send(cors, upstream, headers={"Origin": APP, **bearer("not-a-jwt")})
    assert_invalid(resp, upstream)
    assert_cors_headers(resp, APP)

    resp = send(cors, upstream, headers={"Origin": APP, **bearer(expired_token(signing_key))})
    assert_expired(resp, upstream)
    assert_cors_headers(resp, APP)


def test_403_for_listed_origin_carries_cors_headers(cors, upstream, signing_key):
    headers = {"Origin": APP, **bearer(mint_id(signing_key, groups=["readers"]))}

    resp = send(cors, upstream, "/admin", headers)

    assert_forbidden(resp, upstream)
    assert_cors_headers(resp, APP)


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example.com", "http://app.example.com", "https://app.example.com:8443",
     "https://app.example.com.evil.test", "null", "HTTPS://APP.EXAMPLE.COM"],
)  # fmt: skip
def test_401_for_unlisted_origin_has_no_cors_headers(cors, upstream, origin):
    resp = send(cors, upstream, headers={"Origin": origin})

    assert_missing(resp, upstream)
    assert_no_cors_headers(resp)


def test_401_without_origin_has_no_cors_headers(cors, upstream):
    resp = send(cors, upstream)

    assert_missing(resp, upstream)
    assert_no_cors_headers(resp)


def test_wildcard_origin_list_echoes_any_origin_on_local_replies(cors_authenticate, upstream):
    for origin in ("https://a.example", "https://b.example"):
        resp = send(cors_authenticate, upstream, headers={"Origin": origin})
        assert_missing(resp, upstream)
        assert_cors_headers(resp, origin)


# --- preflights authenticated ------------------------------------------------------------


def test_preflight_without_token_is_401_when_preflights_authenticate(cors_authenticate, upstream):
    resp = send(cors_authenticate, upstream, headers=preflight(), method="OPTIONS")

    assert_missing(resp, upstream)
    assert_cors_headers(resp, APP)


def test_preflight_with_token_passes_when_preflights_authenticate(
    cors_authenticate, upstream, signing_key
):
    headers = {**preflight(), **bearer(mint_id(signing_key))}

    resp = send(cors_authenticate, upstream, headers=headers, method="OPTIONS")

    seen = assert_allowed(resp, upstream)
    assert seen.method == "OPTIONS"


# --- enforce mode: the decision header is the filter's -----------------------------------


def test_client_decision_header_is_removed_in_enforce_mode(cors, upstream, signing_key):
    headers = [*bearer(mint_id(signing_key)).items(), (DECISION, "allowed"), (DECISION, "x")]

    seen = assert_allowed(send(cors, upstream, headers=headers), upstream)

    assert seen.header_values(DECISION) == []


def test_client_decision_header_is_removed_on_anonymous_route_in_enforce_mode(cors, upstream):
    seen = assert_allowed(send(cors, upstream, "/public/x", [(DECISION, "allowed")]), upstream)

    assert seen.header_values(DECISION) == []


# --- report mode -------------------------------------------------------------------------


def _reported(report, upstream, path="/orders", headers=(), method="GET") -> list[str]:
    seen = assert_allowed(send(report, upstream, path, headers, method), upstream)
    return seen.header_values(DECISION)


def test_report_mode_valid_token_is_reported_allowed(report, upstream, signing_key):
    outcomes = Outcomes(report)
    pools = PoolOutcomes(report, ["test"])

    assert _reported(report, upstream, headers=bearer(mint_id(signing_key))) == ["allowed"]
    assert outcomes.changes() == {"allowed": 1}
    assert pools.changes() == {("test", "allowed"): 1}


def test_report_mode_missing_token_reaches_upstream_reported_missing(report, upstream):
    outcomes = Outcomes(report)

    assert _reported(report, upstream) == ["missing"]
    assert outcomes.changes() == {"denied_missing": 1}


def test_report_mode_invalid_token_reaches_upstream_reported_invalid(report, upstream, signing_key):
    outcomes = Outcomes(report)
    token = tk.with_flipped_signature(mint_id(signing_key))

    assert _reported(report, upstream, headers=bearer(token)) == ["invalid"]
    assert outcomes.changes() == {"denied_invalid": 1}


def test_report_mode_expired_token_reaches_upstream_reported_expired(report, upstream, signing_key):
    outcomes = Outcomes(report)

    assert _reported(report, upstream, headers=bearer(expired_token(signing_key))) == ["expired"]
    assert outcomes.changes() == {"denied_expired": 1}


def test_report_mode_missing_group_reaches_upstream_reported_forbidden(
    report, upstream, signing_key
):
    outcomes = Outcomes(report)
    pools = PoolOutcomes(report, ["test"])
    token = mint_id(signing_key, groups=["readers"])

    assert _reported(report, upstream, "/admin/x", bearer(token)) == ["forbidden"]
    assert outcomes.changes() == {"denied_forbidden": 1}
    assert pools.changes() == {("test", "denied_forbidden"): 1}


def test_report_mode_keys_unavailable_reaches_upstream_reported_unavailable(
    report, upstream, signing_key
):
    outcomes = Outcomes(report)
    # payload: id token of the "down" pool, whose JWKS was never fetched
    token = mint_id(signing_key, issuer=tk.cognito_issuer(DOWN_POOL))

    assert _reported(report, upstream, headers=bearer(token)) == ["unavailable"]
    assert outcomes.changes() == {"unavailable": 1}


def test_report_mode_anonymous_route_is_reported_allow_rule(report, upstream):
    outcomes = Outcomes(report)

    assert _reported(report, upstream, "/public/x") == ["allow_rule"]
    assert outcomes.changes() == {}


def test_report_mode_preflight_is_reported_cors_preflight(report, upstream):
    assert _reported(report, upstream, headers=preflight(), method="OPTIONS") == ["cors_preflight"]


@pytest.mark.parametrize("forged", [["allowed"], ["allowed", "allowed"], ["report"]])
def test_report_mode_client_decision_header_never_reaches_upstream_as_sent(
    report, upstream, forged
):
    headers = [(DECISION, value) for value in forged]

    assert _reported(report, upstream, headers=headers) == ["missing"]
    assert _reported(report, upstream, "/public/x", headers) == ["allow_rule"]


def test_report_mode_forged_identity_headers_are_removed_from_refused_requests(
    report, upstream, signing_key
):
    forged = [(h, "forged") for h in CLAIM_HEADERS.values()]
    for headers in (forged, [*forged, *bearer("not-a-jwt").items()]):
        seen = assert_allowed(send(report, upstream, headers=headers), upstream)
        for header in CLAIM_HEADERS.values():
            assert seen.header_values(header) == [], f"forged {header} reached the upstream"


def test_report_mode_allowed_token_gets_identity_headers(report, upstream, signing_key):
    seen = assert_allowed(
        send(report, upstream, headers=bearer(mint_id(signing_key, "rita", ["admins"]))), upstream
    )

    assert seen.header("x-cognito-username") == "rita"
    assert seen.header(DECISION) == "allowed"
    # the token is forwarded as in enforce mode
    assert seen.header("authorization").startswith("Bearer ")


def test_report_mode_filter_state_says_report_for_what_would_be_refused(
    report, upstream, signing_key, report_log
):
    """README "Identity for the upstream": `cognito_authorizer.decision` is `report` for a request let through only
    because of report mode, `allow` for one that would pass anyway."""
    refused, allowed = f"/orders/{uuid.uuid4().hex}", f"/orders/{uuid.uuid4().hex}"
    assert_allowed(send(report, upstream, refused), upstream)
    assert_allowed(send(report, upstream, allowed, bearer(mint_id(signing_key))), upstream)

    expected = [
        f"{refused} 200 decision=report reason=missing",
        f"{allowed} 200 decision=allow reason=allowed",
    ]

    def logged():
        try:
            lines = report_log.read_text().splitlines()
        except OSError:
            return None
        return lines if all(e in lines for e in expected) else None

    wait_until(logged, 10, f"access log lines {expected}")
