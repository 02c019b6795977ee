"""Child processes that are always stopped whole.

Each process gets its own session (so its own process group): moto_server forks workers
and Envoy has threads; signalling the group stops everything it started, and never touches
any other process on the machine."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

# Every process started and not yet stopped: stopped at interpreter exit as a safety net
# for paths that skip the owners' finalizers.
_RUNNING: set[ManagedProcess] = set()


@atexit.register
def _stop_all() -> None:
    for process in list(_RUNNING):
        process.stop(timeout=5)


class ManagedProcess:
    """A child in its own process group, with stdout+stderr going to `output_path`."""

    def __init__(self, argv: list[str], output_path: Path, env: dict[str, str] | None = None):
        self.argv = argv
        self.output_path = output_path
        output_path.parent.mkdir(parents=True, exist_ok=True)
        self._output = open(output_path, "ab")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        _RUNNING.add(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exit_code(self) -> int | None:
        """None while running."""
        return self.proc.poll()

    def output(self) -> str:
        try:
            return self.output_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM to the group, SIGKILL if it lingers; idempotent. Returns the exit code.

        The leader is reaped only after the group got its final SIGKILL, so its pid (the
        group id) cannot have been reused by an unrelated process when we signal it."""
        try:
            if self.proc.returncode is None:
                self._signal_group(signal.SIGTERM)
                if not self._exited_unreaped(timeout):
                    self._signal_group(signal.SIGKILL)
                    self._exited_unreaped(timeout)
                # Children of the leader (a server's workers) may outlive it.
                self._signal_group(signal.SIGKILL)
                self.proc.wait(timeout=timeout)
        finally:
            if not self._output.closed:
                self._output.close()
            _RUNNING.discard(self)
        return self.proc.returncode

    def _exited_unreaped(self, timeout: float) -> bool:
        """Waits until the leader has exited, leaving it a zombie (WNOWAIT)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return True  # already reaped
            if info is not None:
                return True
            time.sleep(0.01)
        return False

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)
