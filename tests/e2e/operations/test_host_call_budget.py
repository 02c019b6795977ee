"""The per-request host-call budget (README "Benchmarks"): host calls are the fixed cost of a
request on the hot path, so their number is measured on real Envoy, for the three cases the
README publishes — a cached allowed token, a refused request, a fresh token, an anonymous
route, a client copy of an identity header — with seven claim headers configured and with
the filter state turned off.

The filter counts its own host calls and logs `host calls: N` per request at debug level."""

from __future__ import annotations

import re

import pytest

from support.authorizer_config import CLAIM_HEADERS, TEST_CLUSTER, self_minted_only_config
from support.envoy import settled_log_size
from support.scenarios import bearer, mint_id

LINE = re.compile(r"host calls: (\d+)")


def budget(case: str, claim_headers: int, properties: int) -> int:
    """The README's budget: fixed calls + one per claim header set + one per property.

    - cached allowed token: read the headers, read the clock, count cache_hit, count
      allowed (global and per pool) = 5;
    - refused request without a token: read the headers, count denied_missing, send the
      reply = 3 (the clock is not read);
    - fresh token: as cached, with cache_miss, plus the host's verify_signature = 6;
    - anonymous route: read the headers = 1 (no counter, no clock);
    - refused request carrying a client copy of an identity header: as refused, plus its
      removal = 4."""
    fixed = {"cached allowed token": 5, "refused request (no token)": 3,
             "fresh token (host crypto)": 6, "anonymous route": 1,
             "refused, forged identity header": 4}[case]  # fmt: skip
    return fixed + claim_headers + properties


@pytest.fixture(scope="module")
def envoys(module_envoys, jwks):
    base = {
        "claims_to_headers": CLAIM_HEADERS,
        "rules": [{"match": {"exact": "/public"}, "allow": True}],
    }
    return {
        "all": module_envoys(
            self_minted_only_config(**base), {TEST_CLUSTER: jwks.port}, name="budget-all"
        ),
        "none": module_envoys(
            self_minted_only_config(**base, filter_state=[]),
            {TEST_CLUSTER: jwks.port},
            name="budget-none",
        ),
    }


def host_calls(envoy, send) -> int:
    mark = settled_log_size(envoy)
    resp = send()
    counts = []
    for _ in range(50):
        counts = [int(n) for n in LINE.findall(envoy.log_since(mark))]
        if counts:
            break
        settled_log_size(envoy, 0.05)
    assert len(counts) == 1, f"expected one request's count, got {counts} ({resp.status})"
    return counts[0]


@pytest.mark.parametrize("filter_state", ["all", "none"])
def test_host_calls_per_request_stay_within_the_published_budget(
    envoys, upstream, signing_key, filter_state
):
    envoy = envoys[filter_state]
    token = mint_id(signing_key, username="budget", groups=["readers"])
    def allowed():
        resp = envoy.request("/x", bearer(token))
        assert resp.status == 200, resp.describe()

    envoy.on_every_worker(allowed)  # cached on every worker's VM

    def send(headers, path="/x"):
        return lambda: envoy.request(path, headers)

    fresh = mint_id(signing_key, username="new")
    measured = {
        "cached allowed token": host_calls(envoy, send(bearer(token))),
        "refused request (no token)": host_calls(envoy, send({})),
        "fresh token (host crypto)": host_calls(envoy, send(bearer(fresh))),
        "anonymous route": host_calls(envoy, send({}, "/public")),
        "refused, forged identity header": host_calls(envoy, send({"x-cognito-sub": "admin"})),
    }
    claims = {"cached allowed token": 6, "fresh token (host crypto)": 5}
    properties = {
        "cached allowed token": 5, "refused request (no token)": 2,
        "fresh token (host crypto)": 5, "anonymous route": 2,
        "refused, forged identity header": 2,
    } if filter_state == "all" else dict.fromkeys(measured, 0)  # fmt: skip

    print(f"[measure] host calls per request ({filter_state} filter state): {measured}")
    for case, calls in measured.items():
        assert calls == budget(case, claims.get(case, 0), properties[case]), (case, calls)
