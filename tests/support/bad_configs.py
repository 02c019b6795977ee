"""Filter configurations the filter refuses, one per class of refusal, each with what its
log line must name: the JSON path of the key at fault (for a missing key, its parent's path
and its name). Used at bootstrap (test_bad_config.py: Envoy exits) and as pushes to a
running Envoy (test_changes_under_load.py: Envoy rejects the listener update)."""

from __future__ import annotations

from .authorizer_config import self_minted_only_config, self_minted_pool


def _config(**pool_overrides) -> dict:
    return {"user_pools": [self_minted_pool(**pool_overrides)]}


BAD_CONFIGS: dict[str, tuple[dict | str, str | tuple[str, ...]]] = {
    "not-json": ('{"user_pools": [', ("invalid configuration at",)),
    "pool-id-without-underscore": (
        {"user_pools": [{"user_pool_id": "nounderscore", "jwks_cluster": "test_jwks"}]},
        "user_pools[0].user_pool_id",
    ),
    "unknown-top-level-key": ({**self_minted_only_config(), "bogus": 1}, "bogus"),
    "unknown-pool-key": (_config(clientids=["x"]), "user_pools[0].clientids"),
    "empty-user-pools": ({"user_pools": []}, "user_pools"),
    "no-user-pools": ({"realm": "api"}, "user_pools"),
    "missing-jwks-cluster": (
        {"user_pools": [{"user_pool_id": "us-east-1_TestPool1"}]},
        ("user_pools[0]", "jwks_cluster"),
    ),
    "wrong-type": ({**self_minted_only_config(), "clock_skew_seconds": "60"}, "clock_skew_seconds"),
    "bad-token-use": (_config(token_use=["refresh"]), "user_pools[0].token_use"),
    "bad-rule": (
        {**self_minted_only_config(), "rules": [{"match": {"prefix": "/x"}}]},
        "rules[0]",
    ),
    "bad-rule-path": (
        {**self_minted_only_config(),
         "rules": [{"match": {"prefix": "/public/../admin"}, "allow": True}]},
        "rules[0].match.prefix",
    ),  # fmt: skip
}


def has_line_naming(log: str, names: str | tuple[str, ...]) -> bool:
    """One line from the filter (Envoy prefixes them with `wasm log`) holding every name."""
    names = (names,) if isinstance(names, str) else names
    return any("wasm log" in line and all(n in line for n in names) for line in log.splitlines())
