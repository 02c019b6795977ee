"""A module that cannot load or start closes, never opens (README "Operations").

Three ways a module fails before it answers a request: the file is not a Wasm module (or is
missing), `on_vm_start` fails (the fault-injection build, `make build-fault`, fails it when
the VM configuration asks), or `on_configure` refuses the configuration (test_bad_config.py
covers each class). Envoy 1.40 creates the plugin on its main thread before it accepts the
listener, so each failure fails the listener itself, whatever `failure_policy` says:

- in a static bootstrap Envoy exits non-zero without opening the listener: clients get a
  refused connection, never an answer the filter did not give;
- pushed over LDS (as Istio and Envoy Gateway deliver plugin configurations), Envoy rejects
  the update (`listener_manager.lds.update_rejected`) and the old listener keeps serving
  (test_changes_under_load.py shows that under load for the corrupt module and each refusal
  class; here for `on_vm_start`).

`failure_policy` (Istio's `failStrategy`) decides only what happens when a VM that started
fails later (test_fail_closed.py)."""

from __future__ import annotations

import socket

import pytest

from support.authorizer_config import TEST_CLUSTER, self_minted_only_config
from support.envoy import authorizer_bootstrap, http_filter, on_port
from support.key_lifecycle import LdsFiles
from support.polling import wait_until
from support.ports import LOOPBACK, free_port

EXIT_TIMEOUT = 60.0
# src/filter/fault.rs FAIL_VM_START.
FAIL_VM_START = "fault: fail on_vm_start"


def _wasm_config(config: dict) -> dict:
    """The Wasm filter's `config` in a bootstrap or a listener."""
    return http_filter(config, "envoy.filters.http.wasm")["typed_config"]["config"]


def _failing_vm(config: dict) -> None:
    config["vm_config"]["configuration"] = {
        "@type": "type.googleapis.com/google.protobuf.StringValue",
        "value": FAIL_VM_START,
    }


def _refused(port: int) -> bool:
    try:
        socket.create_connection((LOOPBACK, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.fixture
def modules(tmp_path, fault_wasm_path):
    corrupt = tmp_path / "corrupt.wasm"
    corrupt.write_bytes(b"\0asm\x01\0\0\0 this is not a module" * 100)
    return {
        "corrupt-module": (str(corrupt), "Failed to parse corrupted Wasm module"),
        "missing-module": (str(tmp_path / "absent.wasm"), "absent.wasm"),
        "on-vm-start-fails": (fault_wasm_path, "fault injection: on_vm_start fails"),
    }


@pytest.mark.parametrize("policy", ["FAIL_CLOSED", "FAIL_OPEN"])
@pytest.mark.parametrize("case", ["corrupt-module", "missing-module", "on-vm-start-fails"])
def test_a_module_that_cannot_start_stops_envoy_whatever_the_failure_policy(
    bootstrap_envoys, modules, upstream, jwks, case, policy
):
    module, log_line = modules[case]
    port = free_port()
    bootstrap = on_port(
        authorizer_bootstrap(module, self_minted_only_config(), upstream.port, {TEST_CLUSTER: jwks.port}),
        port,
    )
    config = _wasm_config(bootstrap)
    config["failure_policy"] = policy
    if case == "on-vm-start-fails":
        _failing_vm(config)

    envoy = bootstrap_envoys(bootstrap, name=f"start-{case}-{policy}", wait=False)
    code = envoy.wait_exit(EXIT_TIMEOUT)

    log = envoy.log_text()
    assert code != 0, envoy.log_tail()
    assert log_line in log, envoy.log_tail()
    assert "starting main dispatch loop" not in log  # it never served
    assert _refused(port)  # what a client gets: no listener, no answer
    assert not upstream.requests


def test_a_pushed_module_whose_vm_cannot_start_is_rejected_and_the_old_one_serves(
    bootstrap_envoys, wasm_path, fault_wasm_path, upstream, jwks, tmp_path
):
    files = LdsFiles(tmp_path / "lds", wasm_path, upstream.port, {TEST_CLUSTER: jwks.port},
                     free_port())  # fmt: skip
    envoy = bootstrap_envoys(files.bootstrap(self_minted_only_config()), name="vm-start-push")
    wait_until(lambda: envoy.request("/x").status == 401, 10, "the filter to answer")
    applied, rejected, _ = files.counts(envoy)

    listener = files.listener(self_minted_only_config(), wasm_path=fault_wasm_path)
    _failing_vm(_wasm_config(listener))
    files.write_listener(listener)

    wait_until(lambda: files.counts(envoy)[1] > rejected, EXIT_TIMEOUT, "Envoy to reject the listener")
    assert "fault injection: on_vm_start fails" in envoy.log_text()
    assert envoy.process.exit_code() is None
    resp = envoy.request("/x")
    assert resp.status == 401, resp.describe()  # the old filter's answer
    assert files.counts(envoy)[0] == applied
