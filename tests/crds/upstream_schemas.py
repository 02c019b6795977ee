"""Python side of check.mjs: every Kubernetes resource against its upstream CRD schema.

`problems(docs)` sends (label, document) pairs to check.mjs (Node, with the npm packages
that `make crds` installs from package-lock.json) and returns label → problems. See
README.md beside this file for where the schemas come from and what each check catches.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise SystemExit("no `node` on PATH: run `make crds` (it installs Node.js and the schemas)")
    if not (HERE / "node_modules" / "@kubernetes-models").is_dir():
        raise SystemExit(f"{HERE}/node_modules: upstream schemas not installed, run `make crds`")
    return node


def problems(docs: list[tuple[str, dict]]) -> dict[str, list[str]]:
    """label → every violation of the upstream schema (`path: message`), [] when valid."""
    payload = json.dumps([{"label": label, "doc": doc} for label, doc in docs])
    proc = subprocess.run([_node(), str(HERE / "check.mjs")], input=payload, capture_output=True,
                          text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"check.mjs failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)
