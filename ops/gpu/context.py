"""What a step of the GPU check runs with: where results go, the mode, the device, its deadline.

``mode`` is ``gpu`` (the real check, on CUDA) or ``cpu`` (the rehearsal: the same code at sizes
a CPU runs in seconds; parts that need CUDA are named as not run). A step checks
:meth:`StepContext.left` before each part and stops early rather than being killed at its bound.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

MODES = ("gpu", "cpu")
TERM_GRACE_S = 5.0  # between SIGTERM and SIGKILL for a step past its bound


@dataclass(frozen=True)
class StepContext:
    out: Path
    mode: str
    deadline: float  # time.monotonic() by which the step must have finished

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")

    @property
    def device(self) -> str:
        return "cuda" if self.mode == "gpu" else "cpu"

    @property
    def gpu(self) -> bool:
        return self.mode == "gpu"

    def left(self) -> float:
        """Seconds until the deadline."""
        return self.deadline - time.monotonic()

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_bounded(cmd: Sequence[str], timeout_s: float, log_path: Path,
                env: Mapping[str, str] | None = None, cwd: Path | None = None,
                own_group: bool = False) -> int | None:
    """Run ``cmd`` with its output in ``log_path``; its return code, or None when it ran past
    ``timeout_s`` (then it is stopped).

    ``own_group``: start it in a process group of its own and stop that whole group, first with
    SIGTERM (a step then runs its ``finally`` blocks: daemons stopped, slabs unlinked), after
    :data:`TERM_GRACE_S` with SIGKILL (the driver does this for each step). Otherwise it stays
    in the caller's group, so that stopping the caller stops it too, and only it is killed."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=cwd, start_new_session=own_group)
        try:
            return proc.wait(timeout=max(1.0, timeout_s))
        except subprocess.TimeoutExpired:
            if not own_group:
                proc.kill()
            else:
                _signal_group(proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=TERM_GRACE_S)
                _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
            return None


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def python_module(module: str, *args: str) -> list[str]:
    """The command running ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]

