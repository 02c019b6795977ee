"""Python side of check.mjs: every Kubernetes resource against its upstream CRD schema.

`problems(docs)` sends (label, document) pairs to check.mjs (Node, with the npm packages
that `make crds` installs from package-lock.json) and returns label → problems. One
check.mjs process serves every call of a Python process (it parses the schemas' type
declarations once). See README.md beside this file for where the schemas come from and
what each check catches.
"""

from __future__ import annotations

import atexit
import json
import shutil
import subprocess
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
_server: subprocess.Popen | None = None
_lock = threading.Lock()


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise SystemExit("no `node` on PATH: run `make crds` (it installs Node.js and the schemas)")
    if not (HERE / "node_modules" / "@kubernetes-models").is_dir():
        raise SystemExit(f"{HERE}/node_modules: upstream schemas not installed, run `make crds`")
    return node


def _stop() -> None:
    if _server is not None and _server.poll() is None:
        _server.stdin.close()
        try:
            _server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _server.kill()


def problems(docs: list[tuple[str, dict]]) -> dict[str, list[str]]:
    """label → every violation of the upstream schema (`path: message`), [] when valid."""
    global _server
    with _lock:
        if _server is None or _server.poll() is not None:
            _server = subprocess.Popen([_node(), str(HERE / "check.mjs"), "--serve"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True)
            atexit.register(_stop)
        _server.stdin.write(json.dumps([{"label": label, "doc": doc} for label, doc in docs]) + "\n")
        _server.stdin.flush()
        line = _server.stdout.readline()
    if not line:
        raise RuntimeError("check.mjs stopped without an answer (its error is above)")
    return json.loads(line)
