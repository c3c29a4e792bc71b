"""The daemon's resources over time, and the progress lines of a run.

A thread samples the current daemon's RSS, open file descriptors and threads (``/proc``, as
``asymcache bench wire`` does) every ``sample_s``, tagged with its lifetime (0 for the first
daemon, +1 per restart), and prints one progress line every ``progress_s``. RSS is also split
into its anonymous part (the heap: where a leak shows), file-backed pages (LMDB's map of the
disk tier, bounded by its file) and shared memory (the CPU tier, touched at start); open
descriptors are counted by kind after each lifetime's warm-up and at its end.
"""

from __future__ import annotations

import os
import statistics
import threading
from collections.abc import Callable
from dataclasses import dataclass

from asymcache.ops.bench.wire import proc_figures
from asymcache.ops.soak.load import Load
from asymcache.ops.soak.stack import Stack


@dataclass(frozen=True)
class Sample:
    t_s: float  # load seconds
    lifetime: int
    rss_bytes: int
    fds: int
    threads: int
    rss_anon: int = 0
    rss_file: int = 0
    rss_shmem: int = 0


def rss_parts(pid: int) -> dict[str, int]:
    """``rss_anon``, ``rss_file`` and ``rss_shmem`` bytes of ``pid`` (``/proc/PID/status``)."""
    names = {"RssAnon:": "rss_anon", "RssFile:": "rss_file", "RssShmem:": "rss_shmem"}
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            name = names.get(line.split(":", 1)[0] + ":")
            if name is not None:
                out[name] = int(line.split()[1]) * 1024
    return out


def fd_kinds(pid: int) -> dict[str, int]:
    """How many of ``pid``'s open descriptors are of each kind (``socket``, ``pipe``, an
    ``anon_inode`` type, or a file's name)."""
    out: dict[str, int] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kind = target.split(":", 1)[0] if target.startswith(("socket:", "pipe:")) else (
            target if target.startswith("anon_inode:") else os.path.basename(target))
        out[kind] = out.get(kind, 0) + 1
    return dict(sorted(out.items()))


class Monitor:
    """See the module docstring; ``faults_done()`` says how many faults ran so far."""

    def __init__(self, stack: Stack, load: Load, progress_s: float,
                 faults_done: Callable[[], str], log: Callable[[str], None],
                 sample_s: float = 1.0) -> None:
        self.stack, self.load, self.progress_s, self.sample_s = stack, load, progress_s, sample_s
        self.faults_done, self.log = faults_done, log
        self.samples: list[Sample] = []
        self.fds: dict[int, dict[str, dict[str, int]]] = {}  # lifetime -> {"warm", "last"}
        self.warmup_s = 0.0  # set by the harness: when a lifetime's "warm" fds are taken
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.sample()

    def sample(self) -> Sample | None:
        daemon, lifetime = self.stack.daemon, len(self.stack.lifetimes) - 1
        if daemon is None or daemon.proc is None or daemon.proc.poll() is not None:
            return None
        if self.stack.lifetimes[-1][1] != daemon.pid:
            return None
        try:
            f = proc_figures(daemon.pid)
            parts = rss_parts(daemon.pid)
        except (OSError, KeyError, ValueError):  # exiting now
            return None
        s = Sample(self.load.now(), lifetime, f["rss_bytes"], f["fds"], f["threads"], **parts)
        self.samples.append(s)
        self._note_fds(daemon.pid, lifetime)
        return s

    def _note_fds(self, pid: int, lifetime: int) -> None:
        started = self.stack.lifetimes[lifetime][0] - self.load.t0
        seen = self.fds.setdefault(lifetime, {})
        try:
            kinds = fd_kinds(pid)
        except OSError:
            return
        if "warm" not in seen and self.load.now() >= started + self.warmup_s:
            seen["warm"] = kinds
        seen["last"] = kinds

    def _run(self) -> None:
        next_line = self.progress_s
        while not self._stop.wait(self.sample_s):
            last = self.sample()
            if self.load.now() >= next_line:
                next_line += self.progress_s
                self.log(self.line(last))

    def line(self, s: Sample | None) -> str:
        recs = self.load.snapshot()
        ok = [r for r in recs if r.ok]
        lat = sorted(r.t_done - r.t_send for r in ok[-500:])
        p50 = statistics.median(lat) if lat else 0.0
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else 0.0
        daemon = "daemon down" if s is None else (
            f"daemon rss {s.rss_bytes / 2**20:.1f} MiB fds {s.fds} threads {s.threads}")
        return (f"[{self.load.now():6.0f} s] {len(recs)} requests, "
                f"{sum(not r.ok for r in recs)} failed, {sum(r.differ for r in recs)} differ, "
                f"{sum(r.cross for r in recs)} cross-tenant | p50 {p50:.2f} s p99 {p99:.2f} s | "
                f"{daemon} | faults {self.faults_done()}")
