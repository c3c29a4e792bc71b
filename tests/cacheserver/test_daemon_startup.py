"""Start-up checks: a CPU tier that cannot fit in shared memory fails at once, naming the field."""

from __future__ import annotations

import os
import subprocess
import tempfile

import pytest

from asymcache.cacheserver.startup import SHM_DIR
from asymcache.ops.daemon_process import DaemonProcess


@pytest.mark.skipif(not os.path.isdir(SHM_DIR), reason=f"no {SHM_DIR} on this system")
def test_a_cpu_tier_larger_than_free_shared_memory_fails_at_start_naming_cpu_bytes(
        tmp_path) -> None:
    st = os.statvfs(SHM_DIR)
    slot = 8192
    too_big = (st.f_blocks * st.f_frsize // slot + 1) * slot  # more than the file system holds
    ipc = tempfile.mkdtemp(prefix="ac-")
    d = DaemonProcess(f"ipc://{ipc}/d.ipc", str(tmp_path / "data"),
                      flags={"cpu_bytes": too_big, "cpu_slot_bytes": slot, "disk_bytes": 0,
                             "metrics_port": 0})
    out = subprocess.run(d.command(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr  # a bad configuration, not a SIGBUS (-7 / 135)
    assert f"cpu_bytes: the CPU tier needs {too_big} bytes" in out.stderr
    assert f"{SHM_DIR} has " in out.stderr and " free" in out.stderr
    assert not os.path.exists(f"{ipc}/d.ipc")  # it stopped before binding anything
    os.rmdir(ipc)


def test_a_daemon_that_fails_to_start_says_why_in_the_launchers_error(tmp_path) -> None:
    ipc = tempfile.mkdtemp(prefix="ac-")
    d = DaemonProcess(f"ipc://{ipc}/d.ipc", str(tmp_path / "data"),
                      flags={"cpu_bytes": "8KiB", "cpu_slot_bytes": "16KiB", "metrics_port": 0},
                      log_path=str(tmp_path / "daemon.log"))
    with pytest.raises(RuntimeError) as failed:
        d.start()
    message = str(failed.value)
    assert message.startswith("daemon exited with status 2 during start-up")
    assert "cpu_bytes: 8192 holds no slot of cpu_slot_bytes=16384" in message  # the log's tail
    os.rmdir(ipc)
