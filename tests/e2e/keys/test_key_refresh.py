"""The key set after the first fetch (README "Keys"): refreshes replace it whole (a dropped key
stops being trusted, cached tokens included), failed or malformed refreshes keep the last
good set until the stale bound, and one fetch per refresh serves every worker."""

from __future__ import annotations

import time

from support import tokens as tk
from support.assertions import assert_allowed, assert_invalid
from support.authorizer_config import TEST_POOL, jwks_path, self_minted_only_config
from support.key_lifecycle import id_token
from support.scenarios import bearer

PATH = jwks_path(TEST_POOL)


def test_refresh_that_drops_a_key_stops_trusting_it_even_for_cached_tokens(
    start_envoy, jwks, upstream, signing_key
):
    new_key = tk.SigningKey.generate("rotated-key")
    jwks.serve(tk.jwks(signing_key, new_key))
    envoy = start_envoy(self_minted_only_config(jwks_refresh_seconds=1))
    old_token, new_token = id_token(signing_key), id_token(new_key)

    def allowed(token):
        upstream.clear()
        assert_allowed(envoy.request("/x", bearer(token)), upstream)

    def refused(token):
        upstream.clear()
        assert_invalid(envoy.request("/x", bearer(token)), upstream)

    # Both keys trusted. The old token goes into the cache of every worker; a second round
    # on every worker is answered from those caches only.
    envoy.on_every_worker(lambda: allowed(old_token))
    hits_before = envoy.counter("cache_hit")
    second_round = envoy.on_every_worker(lambda: allowed(old_token))
    assert envoy.counter("cache_hit") - hits_before == second_round
    allowed(new_token)

    jwks.serve(tk.jwks(new_key))  # the pool rotated: the old key is gone
    hits = jwks.hits(PATH)
    jwks.wait_for_hits(hits + 1, path=PATH)  # the next refresh (1 s)
    # Every worker picks the published set up from shared data on its next tick (≤ 1 s).
    time.sleep(1.3)

    envoy.on_every_worker(lambda: refused(old_token))
    envoy.on_every_worker(lambda: allowed(new_token))


def test_one_fetch_per_refresh_for_the_whole_process(start_envoy, jwks, signing_key):
    start_envoy(self_minted_only_config(jwks_refresh_seconds=1))
    jwks.wait_for_hits(1, path=PATH)
    first = time.monotonic()
    start_hits = jwks.hits(PATH)
    time.sleep(4.5)
    periods = time.monotonic() - first
    fetched = jwks.hits(PATH) - start_hits
    # 3 VMs (main + 2 workers) share one lease: about one fetch per period, never one per VM.
    assert 1 <= fetched <= int(periods) + 1, (fetched, periods)
