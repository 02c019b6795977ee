"""Scenario 2: requests without a bearer token get 401 with the bare challenge."""

from __future__ import annotations

import pytest

from support.assertions import Outcomes, assert_missing


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
        {"Authorization": "Basic abc"},
        # Envoy trims the trailing space: the filter sees "Bearer" alone.
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer"},
        {"Authorization": "bearer   "},
        {"Authorization": ""},
        # A scheme without credentials is a scheme, not a raw token (a JWT has two dots).
        {"Authorization": "Basic"},
        {"Authorization": "Negotiate"},
        {"Authorization": "NTLM"},
    ],
    ids=["no-header", "basic-credentials", "basic-abc", "bearer-space", "bearer-alone",
         "lowercase-bearer-spaces", "empty-header", "bare-basic", "bare-negotiate",
         "bare-ntlm"],
)  # fmt: skip
def test_request_without_bearer_token_gets_401_without_error(authorizer, upstream, headers):
    outcomes = Outcomes(authorizer)

    resp = authorizer.request("/hello", headers)

    assert_missing(resp, upstream)
    assert outcomes.changes() == {"denied_missing": 1}


def test_token_in_another_header_does_not_count(authorizer, upstream, alice):
    """Only the configured source (default: authorization) is read."""
    resp = authorizer.request(
        "/hello", {"X-Auth-Token": alice.id_token, "Cookie": f"id={alice.id_token}"}
    )

    assert_missing(resp, upstream)


def test_missing_token_reply_never_reaches_upstream_for_any_method(authorizer, upstream):
    for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
        resp = authorizer.request("/hello", method=method, body=b"x" if method != "GET" else None)
        assert_missing(resp, upstream)
