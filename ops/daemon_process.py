"""Start and stop a daemon in a child process (for the demo, benchmarks and tests).

``DaemonProcess`` runs ``python -m asymcache.cacheserver`` with the given flags, waits until it
answers a PING, and stops it with SIGTERM (graceful: pending disk writes are flushed), SIGKILL
only if it does not exit in time. It only ever signals the process it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping

from asymcache.cacheserver.protocol import PingReply
from asymcache.cacheserver.protocol.sockets import ClientCurve, ping


class DaemonProcess:
    """A daemon child process bound to ``endpoint`` with ``data_dir``; ``flags`` are more
    ``--name value`` pairs (``{"cpu_bytes": "64MiB"}`` -> ``--cpu-bytes 64MiB``); ``curve`` are
    the keys the readiness PING uses against a CURVE daemon."""

    def __init__(self, endpoint: str, data_dir: str, flags: Mapping[str, object] | None = None,
                 env: Mapping[str, str] | None = None, log_path: str | None = None,
                 curve: ClientCurve | None = None) -> None:
        self.endpoint = endpoint
        self.curve = curve
        self.data_dir = data_dir
        self.flags = dict(flags or {})
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.start_epoch: int | None = None  # the daemon's epoch, from the readiness PING
        self._log = None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "asymcache.cacheserver", "--endpoint", self.endpoint,
               "--data-dir", self.data_dir]
        for name, value in self.flags.items():
            cmd += [f"--{name.replace('_', '-')}", str(value)]
        return cmd

    def start(self, timeout_s: float = 30.0) -> PingReply:
        """Start the process and wait for its first PING reply (raises if it dies or hangs)."""
        self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(self.command(), env=self.env, stdout=self._log,
                                     stderr=self._log, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with status {self.proc.returncode} during "
                                   f"start-up{self._log_hint()}")
            reply = ping(self.endpoint, timeout_s=0.2, curve=self.curve)
            if reply is not None:
                self.start_epoch = reply.epoch
                return reply
        self.kill()
        raise TimeoutError(f"daemon did not answer on {self.endpoint} within {timeout_s}s")

    def _log_hint(self, lines: int = 12) -> str:
        """Where the daemon's log is, and its last ``lines`` lines (why start-up failed)."""
        if not self.log_path:
            return ""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - 8192))
                tail = fh.read().decode(errors="replace").splitlines()[-lines:]
        except OSError:
            return f" (see {self.log_path})"
        return f" (see {self.log_path}; it ends with:\n" + "\n".join(tail) + ")"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "start() first"
        return self.proc.pid

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM and wait; SIGKILL after ``timeout_s``. Returns the exit status."""
        if self.proc is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return self.kill()
        finally:
            self._close_log()

    def kill(self) -> int | None:
        """SIGKILL (no flushing: what a crash looks like) and reap."""
        if self.proc is None:
            return None
        self.signal(signal.SIGKILL)
        code = self.proc.wait(10)
        self._close_log()
        return code

    def _close_log(self) -> None:
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()  # type: ignore[union-attr]
        self._log = None

    def __enter__(self) -> DaemonProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
