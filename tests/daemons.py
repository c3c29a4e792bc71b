"""The one daemon factory of the tests: real ``python -m asymcache.cacheserver`` processes on
short temporary ipc paths, each stopped (SIGTERM) when the test ends.

Two fixtures in ``tests/conftest.py`` use it with different small tiers: ``start_daemon`` (the
daemon tests' 4 KiB blocks, LRU everywhere so a test can say which block a full tier gives up)
and ``daemons`` (the engine tests' built-in model, 32 KiB blocks, the default policy).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from asymcache.cacheserver.protocol.sockets import ClientCurve
from asymcache.ops.daemon_process import DaemonProcess

# Daemon tests: blocks of tests.cacheserver.daemon_fixtures.LAYOUT (4 KiB).
SMALL = {"cpu_bytes": "256KiB", "cpu_slot_bytes": "8KiB", "disk_bytes": "2MiB",
         "disk_map_bytes": "16MiB", "metrics_port": 0, "log_level": "info", "policy": "lru"}
# Engine tests: blocks of the built-in model (32 KiB), the daemon's default policy.
ENGINE = {"cpu_bytes": "4MiB", "cpu_slot_bytes": "32KiB", "disk_bytes": "16MiB",
          "disk_map_bytes": "64MiB", "metrics_port": 0, "lease_timeout_s": 30}


class DaemonFactory:
    """Starts daemons for one test (flags over ``defaults``); all stopped at teardown.

    Calling the factory starts a daemon on an endpoint of its own (or the one given);
    :meth:`start` always uses :attr:`endpoint` and :attr:`data_dir`, so starting again after a
    stop is a restart of the same daemon, as engines see it."""

    def __init__(self, tmp_path: Path, defaults: dict[str, object]) -> None:
        self.tmp_path = tmp_path
        self.defaults = defaults
        self.ipc_dir = tempfile.mkdtemp(prefix="ac-")  # short: ipc paths are limited to ~100 B
        self.endpoint = f"ipc://{self.ipc_dir}/daemon.ipc"
        self.data_dir = str(tmp_path / "data")
        self.procs: list[DaemonProcess] = []

    def __call__(self, data_dir: Path | str | None = None, endpoint: str | None = None,
                 curve: ClientCurve | None = None, **flags: object) -> DaemonProcess:
        endpoint = endpoint or f"ipc://{self.ipc_dir}/d{len(self.procs)}.ipc"
        proc = DaemonProcess(endpoint, str(data_dir or self.data_dir),
                             flags={**self.defaults, **flags},
                             log_path=str(self.tmp_path / "daemon.log"), curve=curve)
        proc.start()
        self.procs.append(proc)
        return proc

    def start(self, **flags: object) -> DaemonProcess:
        """A daemon on :attr:`endpoint` with its data in :attr:`data_dir`."""
        return self(endpoint=self.endpoint, **flags)

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()
        shutil.rmtree(self.ipc_dir, ignore_errors=True)

    def __enter__(self) -> DaemonFactory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
