"""Hot reload: Envoy serves its listener from a watched LDS file; a test rewrites
the file (atomic rename), Envoy replaces the listener's filter chain (a new plugin
configuration: `on_configure` runs again in every VM) while the process, its shared data
and the JWKS server stay up.

The filter promises (README "Keys", src/filter/shared.rs): keys live in proxy-wasm shared
data under the pool's identity (name, issuer, cluster, jwks_uri), so a reload that keeps the
identity reuses them without a fetch, and "a configuration change never picks up another
pool's keys after a reload"; and keys are "refreshed every `jwks_refresh_seconds`" and used
"for `jwks_max_stale_seconds` after the refresh that should have replaced them"."""

from __future__ import annotations

import time

import pytest

from support import tokens as tk
from support.assertions import assert_allowed, assert_invalid
from support.authorizer_config import (
    TEST_CLUSTER,
    TEST_POOL,
    jwks_path,
    self_minted_only_config,
    self_minted_pool,
)
from support.envoy import settled_log_size
from support.key_lifecycle import (
    IDLE_TICK,
    SLACK,
    LdsFiles,
    fetches_since,
    id_token,
    listener_reloads,
    wait_for_reload,
)
from support.scenarios import bearer
from support.ports import free_port
from support.polling import wait_until

PATH = jwks_path(TEST_POOL)
SHARED_DATA_LINE = "using the key set published in shared data"


@pytest.fixture
def lds_envoy(bootstrap_envoys, wasm_path, upstream, jwks, tmp_path):
    """start(filter_config) → (Envoy, LdsFiles): Envoy (2 workers) whose only listener is
    read from a watched file; `files.write(new_config)` reloads it."""
    started = []

    def start(filter_config: dict):
        files = LdsFiles(
            tmp_path / "lds", wasm_path, upstream.port, {TEST_CLUSTER: jwks.port}, free_port()
        )
        envoy = bootstrap_envoys(files.bootstrap(filter_config), name=f"lds-{tmp_path.name}")
        started.append(envoy)
        wait_until(lambda: envoy.counter("jwks_fetch_ok") >= 1, 5, "the first keys")
        return envoy, files

    yield start
    for envoy in started:
        bootstrap_envoys.stop(envoy)


def _reload(envoy, files: LdsFiles, config: dict, routes: list[dict] | None = None) -> float:
    """Writes the new listener and waits until Envoy applied it; returns when it was written
    (fetches the reload causes come after that)."""
    before = listener_reloads(envoy)
    written = time.monotonic()
    files.write(config, routes)
    wait_for_reload(envoy, before)
    return written


def test_reload_with_new_realm_and_route_applies_them_and_keeps_keys_without_a_fetch(
    lds_envoy, jwks, upstream, signing_key
):
    config = self_minted_only_config()  # refresh 3600 s: any fetch below is the reload's
    envoy, files = lds_envoy(config)
    token = id_token(signing_key)
    upstream.clear()
    assert_allowed(envoy.request("/x", bearer(token)), upstream)
    assert envoy.request("/x").header("www-authenticate") == 'Bearer realm="api"'
    hits = jwks.hits(PATH)
    mark = settled_log_size(envoy)

    reloaded = {
        **config,
        "realm": "reloaded",
        "rules": [{"match": {"prefix": "/public"}, "allow": True}],
    }
    routes = [
        {"match": {"prefix": "/teapot"}, "direct_response": {"status": 418}},
        {"match": {"prefix": "/"}, "route": {"cluster": "upstream"}},
    ]
    reloaded_at = _reload(envoy, files, reloaded, routes)

    # The new settings apply to new connections...
    resp = wait_until(
        lambda: (r := envoy.request("/x")).header("www-authenticate")
        == 'Bearer realm="reloaded"' and r,
        5,
        "the new realm",
    )
    assert resp.status == 401 and resp.body == b'{"message":"Unauthorized"}'
    upstream.clear()
    assert envoy.request("/public").status == 200  # the new anonymous rule
    upstream.clear()
    invalid = envoy.request("/x", bearer(token + "x"))
    assert invalid.status == 401 and invalid.header("www-authenticate") == (
        'Bearer realm="reloaded", error="invalid_token"'
    )
    # ...and valid tokens, the cached one and fresh ones, still pass, on both workers.
    for t in (token, id_token(signing_key), token, id_token(signing_key)):
        upstream.clear()
        assert_allowed(envoy.request("/x", bearer(t)), upstream)
    assert envoy.request("/teapot", bearer(token)).status == 418  # the new route
    # The pool's identity did not change: its keys came from shared data, not a fetch
    # (waited one idle tick more, for a fetch a tick would start).
    time.sleep(max(0.0, reloaded_at + IDLE_TICK + SLACK - time.monotonic()))
    assert jwks.hits(PATH) == hits, jwks.fetches(PATH)
    assert SHARED_DATA_LINE in envoy.log_since(mark)
    print(f"[measure] reload (realm, rule, route): {jwks.hits(PATH) - hits} new fetches "
          f"(total {jwks.hits(PATH)}); keys taken from shared data")


def test_reload_pointing_the_pool_at_another_jwks_uri_fetches_it_and_never_uses_the_old_keys(
    lds_envoy, jwks, upstream, signing_key
):
    key_a, key_b = signing_key, tk.SigningKey.generate("after-reload-key")
    config = self_minted_only_config(jwks_min_refetch_seconds=30)
    envoy, files = lds_envoy(config)
    token_a = id_token(key_a)
    upstream.clear()
    assert_allowed(envoy.request("/x", bearer(token_a)), upstream)  # cached by a worker
    # From now on the JWKS lists only B (the old URI is not refreshed for an hour, so the
    # old pool identity keeps A in shared data).
    jwks.serve(tk.jwks(key_b))
    new_uri = f"http://jwks.test/rotated/{TEST_POOL}/.well-known/jwks.json"
    new_path = f"/rotated/{TEST_POOL}/.well-known/jwks.json"
    reloaded_at = _reload(
        envoy, files, {**config, "user_pools": [self_minted_pool(jwks_uri=new_uri)]}
    )

    token_b = id_token(key_b)
    upstream.clear()
    assert_allowed(envoy.request("/x", bearer(token_b)), upstream)
    # Token A: its kid is unknown to the new identity's keys → one refetch, then 401;
    # again within jwks_min_refetch_seconds → 401 without a fetch.
    for t in (token_a, id_token(key_a), token_a):
        upstream.clear()
        assert_invalid(envoy.request("/x", bearer(t)), upstream)
    new_fetches = fetches_since(jwks, reloaded_at, new_path)
    assert len(new_fetches) == 2, new_fetches  # the new identity's first fetch + A's refetch
    assert fetches_since(jwks, reloaded_at, PATH) == []
    assert envoy.counter("jwks_refetch_unknown_kid") == 1
    print(f"[measure] reload to another jwks_uri: {len(new_fetches)} fetches of the new URI "
          f"(first + one unknown-kid refetch), 0 of the old one")


def test_reload_shortening_the_refresh_period_refreshes_on_the_new_period(
    lds_envoy, jwks, upstream, signing_key
):
    """Keys fetched under refresh 3600 s; the reload sets 1 s. README: "Refreshed every
    `jwks_refresh_seconds`"."""
    config = self_minted_only_config()
    envoy, files = lds_envoy(config)
    first = jwks.fetches(PATH)[0]
    reloaded_at = _reload(envoy, files, {**config, "jwks_refresh_seconds": 1})
    token = id_token(signing_key)
    upstream.clear()
    assert_allowed(envoy.request("/x", bearer(token)), upstream)
    deadline = max(reloaded_at, first.received_at + 1) + IDLE_TICK + 2 * SLACK
    time.sleep(max(0.0, deadline - time.monotonic()))
    refreshed = fetches_since(jwks, reloaded_at, PATH)
    print(f"[measure] reload shortening refresh 3600 s → 1 s: {len(refreshed)} fetches in "
          f"{time.monotonic() - reloaded_at:.2f} s after the reload")
    assert refreshed, (
        "no refresh after a reload to jwks_refresh_seconds=1: the schedule in shared data "
        "still says the next fetch is due 3600 s after the first"
    )


def test_reload_making_the_keys_overdue_refreshes_at_once_and_keeps_serving_valid_tokens(
    lds_envoy, jwks, upstream, signing_key
):
    """Keys fetched under refresh 3600 s; 3.5 s later the reload sets refresh 3 s, max stale
    0 s: by the new settings the refresh that should have replaced the keys was due 0.5 s
    ago and the keys are no longer usable. The JWKS is healthy all along: the overdue
    refresh should run now, and no request should get 503 (README "Behaviour": 503 when keys are not
    obtainable) or wait longer than a fetch takes."""
    config = self_minted_only_config()
    envoy, files = lds_envoy(config)
    first = jwks.fetches(PATH)[0]
    time.sleep(max(0.0, first.received_at + 3.5 - time.monotonic()))
    reloaded_at = _reload(
        envoy,
        files,
        {**config, "jwks_refresh_seconds": 3, "jwks_max_stale_seconds": 0,
         "jwks_timeout_ms": 500},
    )  # fmt: skip
    outcomes = []
    while time.monotonic() - reloaded_at < 2.5:
        upstream.clear()
        resp = envoy.request("/x", bearer(id_token(signing_key)))
        outcomes.append((round(time.monotonic() - reloaded_at, 2), resp.status,
                         resp.header("retry-after"), round(resp.elapsed, 2)))  # fmt: skip
        time.sleep(0.2)
    refreshed = fetches_since(jwks, reloaded_at, PATH)
    print(f"[measure] reload making the keys overdue: (s after reload, status, retry-after, "
          f"elapsed) {outcomes}; {len(refreshed)} fetches after the reload, first "
          f"{refreshed[0].received_at - reloaded_at if refreshed else None} s after it")
    assert all(status == 200 for _, status, _, _ in outcomes), outcomes
    assert refreshed and refreshed[0].received_at - reloaded_at <= IDLE_TICK + SLACK, refreshed
    assert max(elapsed for *_, elapsed in outcomes) < 0.5 + SLACK, outcomes
