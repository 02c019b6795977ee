"""Scenario 8: a wrong filter configuration stops Envoy instead of running fail-open.

The filter's on_configure returns false and logs one line naming the JSON path of the key
at fault; Envoy (static listener, FAIL_CLOSED) then refuses the whole bootstrap: it exits
non-zero without ever opening the listener."""

from __future__ import annotations

import json

import pytest

from support.authorizer_config import self_minted_only_config
from support.bad_configs import BAD_CONFIGS, has_line_naming

EXIT_TIMEOUT = 60.0  # compiling the module in V8 takes a few seconds on a busy machine


@pytest.mark.parametrize("case", list(BAD_CONFIGS), ids=list(BAD_CONFIGS))
def test_bad_config_stops_envoy_with_log_line_naming_the_key(start_envoy, case):
    configuration, json_path = BAD_CONFIGS[case]

    envoy = start_envoy(configuration, wait=False)
    code = envoy.wait_exit(EXIT_TIMEOUT)

    log = envoy.log_text()
    assert code != 0, f"Envoy exited {code}:\n{envoy.log_tail()}"
    assert has_line_naming(log, json_path), (
        f"no filter log line names {json_path!r}; log tail:\n{envoy.log_tail()}"
    )
    assert "starting main dispatch loop" not in log  # it never served


def test_good_config_is_accepted(start_envoy):
    """The control for the cases above: the same harness with a valid configuration."""
    envoy = start_envoy(json.loads(json.dumps(self_minted_only_config())))

    assert envoy.port
    assert envoy.process.exit_code() is None
