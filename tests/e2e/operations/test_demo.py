"""`make run` works: the demo script's self-test (401 without a token, 200 with one), on
ports and in a directory of its own so it never disturbs a demo someone is running."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.ports import free_port

DEMO = Path(__file__).resolve().parents[3] / "scripts" / "demo.py"


def test_demo_selftest_shows_401_then_200(envoy_bin, wasm_path, tmp_path):
    env = {
        **os.environ,
        "ENVOY_BIN": envoy_bin,
        "WASM": wasm_path,
        "DEMO_SELFTEST": "1",
        "DEMO_DIR": str(tmp_path),
        **{
            name: str(free_port())
            for name in ("DEMO_PORT", "DEMO_ADMIN_PORT", "DEMO_UPSTREAM_PORT", "DEMO_MOTO_PORT")
        },
    }
    demo = subprocess.Popen(
        [sys.executable, str(DEMO)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = demo.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        demo.terminate()  # the demo stops moto and Envoy on SIGTERM
        output, _ = demo.communicate(timeout=30)
        pytest.fail(f"the demo did not finish in 120 s:\n{output}")

    assert demo.returncode == 0, output
    assert "HTTP/1.1 401" in output and "HTTP/1.1 200" in output, output
    assert '"x-cognito-username": "alice"' in output, output
