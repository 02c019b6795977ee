"""Observability (README "Metrics", "Identity for the upstream", "Behaviour"):
counters in `/stats` (as `wasmcustom.cognito_authorizer.<name>`) and `/stats/prometheus`
(as `cognito_authorizer_<name>`), per-pool counters and the per-pool `keys` gauge, the
filter state an access log prints (`wasm.cognito_authorizer.decision|reason|pool|sub|
client_id`), the info line at start naming the version and the pools, and debug lines for
refusals that name the reason and never the token.

One Envoy for the module: moto's pool and the self-minted pool (whose JWKS holds two keys
when Envoy starts), a file access log with every filter-state key."""

from __future__ import annotations

import re
import time
import tomllib
import uuid
from pathlib import Path

import pytest

from support import tokens as tk
from support.assertions import (
    assert_allowed,
    assert_expired,
    assert_forbidden,
    assert_invalid,
    assert_missing,
)
from support.authorizer_config import (
    MOTO_CLUSTER,
    TEST_CLIENT,
    TEST_CLUSTER,
    TEST_ISSUER,
    UNKNOWN_ISSUER,
    moto_pool,
    self_minted_pool,
)
from support.polling import wait_until
from support.scenarios import bearer, filter_metrics, mint_id

REPO = Path(__file__).resolve().parents[3]
VERSION = tomllib.loads((REPO / "Cargo.toml").read_text())["package"]["version"]
LOG_FORMAT = (
    "%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE%"
    " decision=%FILTER_STATE(wasm.cognito_authorizer.decision:PLAIN)%"
    " reason=%FILTER_STATE(wasm.cognito_authorizer.reason:PLAIN)%"
    " pool=%FILTER_STATE(wasm.cognito_authorizer.pool:PLAIN)%"
    " sub=%FILTER_STATE(wasm.cognito_authorizer.sub:PLAIN)%"
    " client_id=%FILTER_STATE(wasm.cognito_authorizer.client_id:PLAIN)%\n"
)
# Every token a test sends: none of them may ever appear in Envoy's log.
SENT_TOKENS: list[str] = []


@pytest.fixture(scope="module")
def access_log_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("access-log") / "access.log"


@pytest.fixture(scope="module")
def envoy(module_envoys, cognito, moto, jwks, signing_key, access_log_path):
    # The test pool publishes two keys when Envoy starts (the `keys` gauge counts them).
    jwks.serve(tk.jwks(signing_key, tk.SigningKey.generate("test-key-2")))
    config = {
        "user_pools": [moto_pool(cognito.pool_id, cognito.client_id), self_minted_pool()],
        "rules": [
            {"match": {"prefix": "/public"}, "allow": True},
            {"match": {"prefix": "/admin"}, "require": {"groups": ["admins"]}},
        ],
    }
    access_log = [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": (
                    "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
                ),
                "path": str(access_log_path),
                "log_format": {"text_format_source": {"inline_string": LOG_FORMAT}},
            },
        }
    ]
    started = module_envoys(
        config,
        {MOTO_CLUSTER: moto.port, TEST_CLUSTER: jwks.port},
        access_log=access_log,
        name="observability",
    )
    # both pools' keys are in before the tests look at gauges
    wait_until(
        lambda: filter_metrics(started).get("pool.test.keys") == 2
        and filter_metrics(started).get("pool.moto.keys", 0) >= 1,
        10,
        "both pools' key sets",
    )
    return started


def send(envoy, upstream, path, token=None, headers=(), method="GET"):
    upstream.clear()
    if token:
        SENT_TOKENS.append(token)
    return envoy.request(path, [*(bearer(token).items() if token else ()), *headers], method=method)


def expired_token(key) -> str:
    # payload: self-minted id token issued 3720 s ago, expired 120 s ago (skew is 60 s)
    return tk.sign(key, tk.id_claims(TEST_ISSUER, TEST_CLIENT, now=int(time.time()) - 3720))


def unique(prefix="/obs") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


def access_line(access_log_path: Path, path: str) -> str:
    """The one access-log line of the request to `path` (waits for Envoy to write it)."""

    def find():
        try:
            lines = access_log_path.read_text().splitlines()
        except OSError:
            return None
        found = [line for line in lines if line.split(" ")[1:2] == [path]]
        return found or None

    found = wait_until(find, 10, f"the access-log line of {path}")
    assert len(found) == 1, found
    return found[0]


def prometheus(envoy) -> dict[str, tuple[str, float]]:
    """`cognito_authorizer_*` samples: name → (type, value)."""
    text = envoy.admin("/stats/prometheus").body.decode()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.M))
    out = {}
    for name, value in re.findall(r"^(cognito_authorizer_\S*?)(?:\{[^}]*\})? (\S+)$", text, re.M):
        out[name] = (types.get(name), float(value))
    return out


# --- start-up ----------------------------------------------------------------------------


def test_info_line_at_start_names_version_and_each_pool(envoy, cognito):
    line = wait_until(
        lambda: next(
            (ln for ln in envoy.log_text().splitlines() if f"version {VERSION}:" in ln), None
        ),
        5,
        "the start-up line",
    )
    assert "][info][" in line, line
    assert f"version {VERSION}: configured 2 pool(s):" in line
    assert (
        f"moto (iss https://cognito-idp.us-east-1.amazonaws.com/{cognito.pool_id},"
        f" jwks via cluster {MOTO_CLUSTER})" in line
    ), line
    assert f"test (iss {TEST_ISSUER}, jwks via cluster {TEST_CLUSTER})" in line, line


# --- gauges and counters -----------------------------------------------------------------


def test_keys_gauge_counts_the_usable_keys_of_each_pool(envoy, moto, cognito):
    import json
    import urllib.request

    with urllib.request.urlopen(f"{moto.endpoint}{cognito.jwks_path}", timeout=5) as resp:
        moto_keys = len(json.load(resp)["keys"])
    metrics = filter_metrics(envoy)

    assert metrics["pool.test.keys"] == 2
    assert metrics["pool.moto.keys"] == moto_keys
    # one fetch per pool for the whole process (three VMs: main thread and two workers)
    assert metrics["pool.test.jwks_fetch_ok"] == 1
    assert metrics["pool.moto.jwks_fetch_ok"] == 1
    assert metrics["jwks_fetch_ok"] == 2
    samples = prometheus(envoy)
    assert samples["cognito_authorizer_pool_test_keys"] == ("gauge", 2.0)
    assert samples["cognito_authorizer_pool_moto_keys"] == ("gauge", float(moto_keys))


def test_stats_names_counters_with_wasmcustom_prefix(envoy):
    names = set(envoy.stats())
    for counter in ("allowed", "denied_missing", "denied_invalid", "denied_expired",
                    "denied_forbidden", "unavailable", "jwks_fetch_ok", "jwks_fetch_failed",
                    "cache_hit", "cache_miss", "jwks_refetch_unknown_kid", "stale_keys_served"):
        assert f"wasmcustom.cognito_authorizer.{counter}" in names, counter
    for pool in ("moto", "test"):
        for counter in ("allowed", "denied_invalid", "denied_expired", "denied_forbidden",
                        "unavailable", "jwks_fetch_ok", "keys"):
            assert f"wasmcustom.cognito_authorizer.pool.{pool}.{counter}" in names, (pool, counter)
    # the cache is per VM, not per pool
    assert not any(re.match(r"wasmcustom\.cognito_authorizer\.pool\.\w+\.cache_", n) for n in names)  # fmt: skip


def test_counters_move_in_stats_and_prometheus_alike(envoy, upstream, alice, cognito, signing_key):
    before_stats = filter_metrics(envoy)
    before_prom = prometheus(envoy)
    bob = cognito.login("bob")
    expired = expired_token(signing_key)

    assert_allowed(send(envoy, upstream, unique(), alice.id_token), upstream)
    assert_allowed(send(envoy, upstream, unique(), mint_id(signing_key)), upstream)
    assert_missing(send(envoy, upstream, unique()), upstream)
    assert_invalid(send(envoy, upstream, unique(), tk.with_flipped_signature(alice.id_token)), upstream)  # fmt: skip
    assert_expired(send(envoy, upstream, unique(), expired), upstream)
    assert_forbidden(send(envoy, upstream, unique("/admin"), bob.id_token), upstream)

    after_stats = filter_metrics(envoy)
    after_prom = prometheus(envoy)
    expected = {
        "allowed": 2, "denied_missing": 1, "denied_invalid": 1, "denied_expired": 1,
        "denied_forbidden": 1, "unavailable": 0,
        "pool.moto.allowed": 1, "pool.moto.denied_invalid": 1, "pool.moto.denied_forbidden": 1,
        "pool.moto.denied_expired": 0,
        "pool.test.allowed": 1, "pool.test.denied_expired": 1, "pool.test.denied_invalid": 0,
        "pool.test.denied_forbidden": 0,
    }  # fmt: skip
    stats_delta = {k: after_stats.get(k, 0) - before_stats.get(k, 0) for k in expected}
    assert stats_delta == expected
    prom_delta = {
        k: after_prom["cognito_authorizer_" + k.replace(".", "_")][1]
        - before_prom["cognito_authorizer_" + k.replace(".", "_")][1]
        for k in expected
    }
    assert prom_delta == expected
    assert after_prom["cognito_authorizer_allowed"][0] == "counter"


# --- filter state in the access log ------------------------------------------------------


@pytest.mark.parametrize("kind", ["id_token", "access_token"])
def test_access_log_allowed_token_has_pool_sub_and_client_id(
    envoy, upstream, alice, cognito, access_log_path, kind
):
    """The app client comes from `aud` in an id token and from `client_id` in an access
    token: the log names it either way."""
    token = getattr(alice, kind)
    _, claims, _ = tk.split(token)
    path = unique()

    assert_allowed(send(envoy, upstream, path, token), upstream)

    assert access_line(access_log_path, path) == (
        f"GET {path} 200 decision=allow reason=allowed pool=moto sub={claims['sub']}"
        f" client_id={cognito.client_id}"
    )


def test_access_log_anonymous_route(envoy, upstream, access_log_path):
    path = unique("/public")

    assert_allowed(send(envoy, upstream, path), upstream)

    assert access_line(access_log_path, path) == (
        f"GET {path} 200 decision=anonymous reason=allow_rule pool=- sub=- client_id=-"
    )


def test_access_log_cors_preflight(envoy, upstream, access_log_path):
    path = unique()
    headers = [("Origin", "https://app.example.com"), ("Access-Control-Request-Method", "PUT")]

    assert_allowed(send(envoy, upstream, path, headers=headers, method="OPTIONS"), upstream)

    assert access_line(access_log_path, path) == (
        f"OPTIONS {path} 200 decision=anonymous reason=cors_preflight pool=- sub=- client_id=-"
    )


def test_access_log_missing_token(envoy, upstream, access_log_path):
    path = unique()

    assert_missing(send(envoy, upstream, path), upstream)

    assert access_line(access_log_path, path) == (
        f"GET {path} 401 decision=deny reason=missing pool=- sub=- client_id=-"
    )


def test_access_log_invalid_token_of_a_known_pool_names_the_pool(
    envoy, upstream, signing_key, access_log_path
):
    path = unique()
    token = tk.with_flipped_signature(mint_id(signing_key))

    assert_invalid(send(envoy, upstream, path, token), upstream)

    assert access_line(access_log_path, path) == (
        f"GET {path} 401 decision=deny reason=invalid pool=test sub=- client_id=-"
    )


def test_access_log_token_of_unknown_issuer_names_no_pool(
    envoy, upstream, signing_key, access_log_path
):
    path = unique()

    token = mint_id(signing_key, issuer=UNKNOWN_ISSUER)

    assert_invalid(send(envoy, upstream, path, token), upstream)

    assert access_line(access_log_path, path) == (
        f"GET {path} 401 decision=deny reason=invalid pool=- sub=- client_id=-"
    )


def test_access_log_expired_token(envoy, upstream, signing_key, access_log_path):
    path = unique()
    token = expired_token(signing_key)

    assert_expired(send(envoy, upstream, path, token), upstream)

    assert access_line(access_log_path, path) == (
        f"GET {path} 401 decision=deny reason=expired pool=test sub=- client_id=-"
    )


def test_access_log_forbidden_names_the_verified_tokens_pool_sub_and_client(
    envoy, upstream, cognito, access_log_path
):
    """README "Identity for the upstream": `pool`, `sub` and `client_id` are published "after
    a verified token" — a 403 comes after one, so the log can say who was refused."""
    bob = cognito.login("bob")
    _, claims, _ = tk.split(bob.id_token)
    path = unique("/admin")

    assert_forbidden(send(envoy, upstream, path, bob.id_token), upstream)

    assert access_line(access_log_path, path) == (
        f"GET {path} 403 decision=deny reason=forbidden pool=moto sub={claims['sub']}"
        f" client_id={cognito.client_id}"
    )


# --- the debug log: reasons, never tokens ------------------------------------------------


def test_refusals_are_logged_at_debug_with_their_reason(envoy, upstream, signing_key, alice):
    mark = envoy.log_size()
    expired = expired_token(signing_key)

    assert_invalid(send(envoy, upstream, unique(), tk.with_flipped_signature(mint_id(signing_key))), upstream)  # fmt: skip
    assert_expired(send(envoy, upstream, unique(), expired), upstream)
    assert_missing(send(envoy, upstream, unique()), upstream)

    expected = [
        "refused: reason=bad_signature class=invalid pool=test",
        "refused: reason=expired class=expired pool=test",
        "refused: reason=no_token class=missing pool=-",
    ]

    def logged():
        lines = [ln for ln in envoy.log_since(mark).splitlines() if "refused: " in ln]
        return lines if all(any(e in ln for ln in lines) for e in expected) else None

    lines = wait_until(logged, 5, f"debug lines {expected}")
    for line in lines:
        assert "][debug][wasm]" in line, line


def test_no_token_ever_appears_in_the_envoy_log(envoy, upstream, signing_key, alice, cognito):
    """Runs last: every token this module sent, valid or refused, is checked. Neither its
    signature nor its payload segment may be in Envoy's log or output."""
    bob = cognito.login("bob")
    for token in (alice.id_token, tk.with_flipped_signature(alice.access_token), bob.id_token):
        send(envoy, upstream, unique("/admin"), token)
    send(envoy, upstream, unique(), "Bearer-less garbage " + mint_id(signing_key))
    time.sleep(0.2)  # the log is flushed every 50 ms
    log = envoy.log_text()
    assert "refused: reason=" in log
    assert len(SENT_TOKENS) >= 10
    for token in SENT_TOKENS:
        parts = token.split()[-1].split(".")
        for segment in parts[1:]:
            if len(segment) >= 16:
                assert segment not in log, f"a token segment is in the log: {segment[:24]}..."
