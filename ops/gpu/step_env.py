"""Step ``env``: the machine the figures come from.

Device name, compute capability, SM count and memory, driver (``nvidia-smi``), torch, its CUDA
and cuDNN, Triton, Python, glibc, CPU cores and memory, the versions of every carried
distribution, and the commit when the tree is a git checkout.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess

from asymcache.ops.gpu.context import StepContext
from asymcache.ops.gpu.results import StepRecord
from asymcache.ops.gpu.wheels import ROOT, carried


def run(rec: StepRecord, ctx: StepContext) -> None:
    import torch

    f = rec.figures
    f.update(python=platform.python_version(), platform=platform.platform(),
             glibc="-".join(platform.libc_ver()), cpu_count=os.cpu_count(),
             host_memory_gib=_host_memory_gib(), torch=torch.__version__,
             cuda=torch.version.cuda, triton=_version("triton"), commit=_git_commit())
    f["carried"] = {name: _version(name) for name in carried()}
    if not ctx.gpu or not torch.cuda.is_available():
        f["device"] = "cpu"
        rec.skip("cuda_device", "needs CUDA (CPU rehearsal)" if not ctx.gpu
                 else "torch sees no CUDA device")
        if ctx.gpu:
            rec.status, rec.error = "failed", "the GPU check found no CUDA device"
        return
    props = torch.cuda.get_device_properties(0)
    f.update(device=props.name, capability=f"{props.major}.{props.minor}",
             sm_count=props.multi_processor_count,
             device_memory_gib=round(props.total_memory / 2**30, 1),
             cudnn=torch.backends.cudnn.version(), driver=_nvidia_smi("driver_version"),
             device_count=torch.cuda.device_count())
    ctx.log(f"{props.name} (sm_{props.major}{props.minor}, {props.multi_processor_count} SMs, "
            f"{f['device_memory_gib']} GiB), driver {f['driver']}, torch {torch.__version__}, "
            f"CUDA {torch.version.cuda}, triton {f['triton']}")


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _host_memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            kib = int(next(line for line in fh if line.startswith("MemTotal")).split()[1])
        return round(kib / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        return None


def _nvidia_smi(field: str) -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        run = subprocess.run([exe, f"--query-gpu={field}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return run.stdout.strip().splitlines()[0] if run.returncode == 0 and run.stdout else None


def _git_commit() -> str | None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return None
    try:
        run = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return run.stdout.strip() or None
