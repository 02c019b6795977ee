"""Scenario 8: a wrong filter configuration stops Envoy instead of running fail-open.

The filter's on_configure returns false and logs one line naming the JSON path of the key
at fault; Envoy (static listener, FAIL_CLOSED) then refuses the whole bootstrap: it exits
non-zero without ever opening the listener."""

from __future__ import annotations

import json

import pytest

from support.authorizer_config import self_minted_only_config, self_minted_pool

EXIT_TIMEOUT = 60.0  # compiling the module in V8 takes a few seconds on a busy machine


def _config(**pool_overrides) -> dict:
    return {"user_pools": [self_minted_pool(**pool_overrides)]}


BAD_CONFIGS = {
    # id: (configuration, what one filter log line must name: the JSON path of the key,
    #      or, for a missing key, its parent's path and its name)
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
}


def _has_line_naming(log: str, names: str | tuple[str, ...]) -> bool:
    """One line from the filter (Envoy prefixes them with `wasm log`) holding every name."""
    names = (names,) if isinstance(names, str) else names
    return any("wasm log" in line and all(n in line for n in names) for line in log.splitlines())


@pytest.mark.parametrize("case", list(BAD_CONFIGS), ids=list(BAD_CONFIGS))
def test_bad_config_stops_envoy_with_log_line_naming_the_key(start_envoy, case):
    configuration, json_path = BAD_CONFIGS[case]

    envoy = start_envoy(configuration, wait=False)
    code = envoy.wait_exit(EXIT_TIMEOUT)

    log = envoy.log_text()
    assert code != 0, f"Envoy exited {code}:\n{envoy.log_tail()}"
    assert _has_line_naming(log, json_path), (
        f"no filter log line names {json_path!r}; log tail:\n{envoy.log_tail()}"
    )
    assert "starting main dispatch loop" not in log  # it never served


def test_configuration_that_is_not_json_stops_envoy(start_envoy):
    envoy = start_envoy('{"user_pools": [', wait=False)

    code = envoy.wait_exit(EXIT_TIMEOUT)

    assert code != 0
    assert any("wasm log" in line for line in envoy.log_text().splitlines() if "error" in line)


def test_good_config_is_accepted(start_envoy):
    """The control for the cases above: the same harness with a valid configuration."""
    envoy = start_envoy(json.loads(json.dumps(self_minted_only_config())))

    assert envoy.port
    assert envoy.process.exit_code() is None
