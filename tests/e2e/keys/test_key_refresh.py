"""The key set after the first fetch (README "Keys"): refreshes replace it whole (a dropped key
stops being trusted, cached tokens included), failed or malformed refreshes keep the last
good set until the stale bound, and one fetch per refresh serves every worker."""

from __future__ import annotations

import time

from support import tokens as tk
from support.assertions import assert_invalid
from support.authorizer_config import TEST_CLIENT, TEST_ISSUER, TEST_POOL, jwks_path
from support.authorizer_config import self_minted_only_config
from support.scenarios import bearer

PATH = jwks_path(TEST_POOL)


def _id_token(key: tk.SigningKey) -> str:
    # payload: {"iss": TEST_ISSUER, "aud": TEST_CLIENT, "token_use": "id", "exp": now+3600, ...}
    return tk.sign(key, tk.id_claims(TEST_ISSUER, TEST_CLIENT))


def test_refresh_that_drops_a_key_stops_trusting_it_even_for_cached_tokens(
    start_envoy, jwks, upstream, signing_key
):
    new_key = tk.SigningKey.generate("rotated-key")
    jwks.serve(tk.jwks(signing_key, new_key))
    envoy = start_envoy(self_minted_only_config(jwks_refresh_seconds=1))
    old_token, new_token = _id_token(signing_key), _id_token(new_key)
    for _ in range(3):  # both keys trusted; the old token is now in the workers' caches
        assert envoy.request("/x", bearer(old_token)).status == 200
        assert envoy.request("/x", bearer(new_token)).status == 200

    jwks.serve(tk.jwks(new_key))  # the pool rotated: the old key is gone
    hits = jwks.hits(PATH)
    jwks.wait_for_hits(hits + 1, path=PATH)  # the next refresh (1 s)
    # Every worker picks the published set up from shared data on its next tick (≤ 1 s).
    time.sleep(1.3)

    for _ in range(4):
        upstream.clear()
        assert_invalid(envoy.request("/x", bearer(old_token)), upstream)
        assert envoy.request("/x", bearer(new_token)).status == 200


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
