"""The README "Behaviour" reply table as assertions: exact status, body bytes, content type and
challenge, and whether the request reached the upstream."""

from __future__ import annotations

from .client import Response
from .envoy import Envoy
from .upstream import EchoUpstream, ReceivedRequest

REALM = "api"
UNAUTHORIZED = b'{"message":"Unauthorized"}'
EXPIRED = b'{"message":"The incoming token has expired"}'
UNAVAILABLE = b'{"message":"Service Unavailable"}'
CHALLENGE_MISSING = f'Bearer realm="{REALM}"'
CHALLENGE_INVALID = f'Bearer realm="{REALM}", error="invalid_token"'
CHALLENGE_EXPIRED = (
    f'Bearer realm="{REALM}", error="invalid_token", error_description="The token has expired"'
)
# Counters that count request outcomes (each request moves exactly one of them).
OUTCOME_COUNTERS = (
    "allowed",
    "denied_missing",
    "denied_invalid",
    "denied_expired",
    "denied_forbidden",
    "unavailable",
    "denied_revoked",
)


def _local_reply(resp: Response, upstream: EchoUpstream, status: int, body: bytes) -> None:
    assert resp.status == status, f"expected {status}, got:\n{resp.describe()}"
    assert resp.body == body, f"body:\n{resp.describe()}"
    assert resp.header("content-type") == "application/json", resp.describe()
    assert upstream.requests == [], f"a denied request reached the upstream: {upstream.requests}"


def assert_missing(resp: Response, upstream: EchoUpstream) -> None:
    """401, no token: the challenge names the realm only (no error parameter)."""
    _local_reply(resp, upstream, 401, UNAUTHORIZED)
    assert resp.header("www-authenticate") == CHALLENGE_MISSING, resp.describe()


def assert_invalid(resp: Response, upstream: EchoUpstream) -> None:
    _local_reply(resp, upstream, 401, UNAUTHORIZED)
    assert resp.header("www-authenticate") == CHALLENGE_INVALID, resp.describe()


def assert_expired(resp: Response, upstream: EchoUpstream) -> None:
    _local_reply(resp, upstream, 401, EXPIRED)
    assert resp.header("www-authenticate") == CHALLENGE_EXPIRED, resp.describe()


def assert_unavailable(resp: Response, upstream: EchoUpstream) -> None:
    """503 with a positive integer retry-after and no challenge."""
    _local_reply(resp, upstream, 503, UNAVAILABLE)
    assert resp.header("www-authenticate") is None, resp.describe()
    retry_after = resp.header("retry-after")
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1, (
        resp.describe()
    )


def assert_allowed(resp: Response, upstream: EchoUpstream) -> ReceivedRequest:
    """200 from the upstream, reached exactly once; returns what the upstream received."""
    assert resp.status == 200, f"expected 200 from the upstream, got:\n{resp.describe()}"
    received = upstream.requests
    assert len(received) == 1, f"upstream saw {len(received)} requests"
    return received[0]


class Outcomes:
    """Snapshot of the outcome counters; `changes()` is what moved since, e.g.
    {"denied_expired": 1} — so a test checks its requests were classified exactly."""

    def __init__(self, envoy: Envoy):
        self.envoy = envoy
        self.before = envoy.counters()

    def changes(self) -> dict[str, int]:
        after = self.envoy.counters()
        deltas = {n: after.get(n, 0) - self.before.get(n, 0) for n in OUTCOME_COUNTERS}
        return {n: d for n, d in deltas.items() if d}


FORBIDDEN = b'{"message":"Forbidden"}'


def challenge_forbidden(scope: str | None = None) -> str:
    """The 403 challenge: `scope` (the rule's required scopes, space-joined) only when the
    rule requires scopes."""
    base = f'Bearer realm="{REALM}", error="insufficient_scope"'
    return base if scope is None else f'{base}, scope="{scope}"'


def assert_forbidden(resp: Response, upstream: EchoUpstream, scope: str | None = None) -> None:
    """403 for a valid token that misses the route's requirement."""
    _local_reply(resp, upstream, 403, FORBIDDEN)
    assert resp.header("www-authenticate") == challenge_forbidden(scope), resp.describe()
