"""One run of ``asymcache bench preempt``: a mode, fresh hosts, the workload replayed open loop
while the schedule preempts the hosts.

Modes:

* ``cache`` — the daemons share the Redis Cluster (remote tier); a drained request resumes on
  the other host and finds the KV its first host wrote through and flushed while draining;
* ``recompute`` — the same, except that the daemons have no remote tier: each host has only its
  own tiers, so a resumed request recomputes whatever the host it lands on never computed
  itself (the drained host's KV is lost with it), and a replacement host starts cold. This is a
  deployment without a shared cache, with everything else (MSA reuse, local tiers, drain and
  resume of the token ids) kept;
* ``none`` — no preemption (the shared cluster, as in ``cache``): the reference run, whose
  outputs every other run must equal.

Every host of a run is started before the replay (the replacements too, idle and out of
service until their time): a new instance boots on other hardware, so here its start-up must not
take CPU from the hosts that serve. The two first hosts are then warmed up (``Setup.warmup``,
unmeasured), as a fleet that has been serving would be; a replacement has fresh, empty tiers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asymcache.ops.bench._preempt_client import Record, complete
from asymcache.ops.bench._preempt_hosts import PICK_TIMEOUT_S, Fleet, Host, start_all, stop_all
from asymcache.ops.bench._preempt_schedule import Preemption, Timing
from asymcache.ops.e2e.workload import E2ERequest, Workload

MODES = ("cache", "recompute", "none")
LEAD_S = 0.2
MAX_CLIENT_THREADS = 128
REQUEST_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Setup:
    """What every run of one benchmark shares: the workload, the schedule, the hosts' settings
    (``remote``: the daemon flags of the shared cluster, left out in ``recompute``),
    ``flush_remote`` (empties the cluster before a run) and the warm-up requests."""

    workload: Workload
    timing: Timing
    preemptions: tuple[Preemption, ...]
    daemon_flags: dict[str, object]
    engine_options: dict[str, Any]
    remote: dict[str, object]
    root: Path
    flush_remote: Callable[[], None] = lambda: None
    warmup: tuple[E2ERequest, ...] = ()  # sent to each first host before the replay


@dataclass
class RunResult:
    """A run's records (workload order), what the schedule did (times in seconds from the
    replay's start) and the replay's start on the client's clock."""

    mode: str
    records: list[Record]
    t0: float
    events: list[dict[str, Any]] = field(default_factory=list)


def run_mode(mode: str, setup: Setup, tag: str) -> RunResult:
    """One run of ``mode`` (``tag`` names its hosts' files and the cluster's key prefix).
    Side effects: child processes for its hosts, files under ``setup.root / tag``."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; known: {list(MODES)}")
    root = setup.root / tag
    root.mkdir(parents=True, exist_ok=True)
    flags = dict(setup.daemon_flags)
    if mode != "recompute":
        setup.flush_remote()
        flags.update(setup.remote, remote_prefix=f"{tag}:")
    plan = setup.preemptions if mode != "none" else ()
    hosts = [Host(f"h{s}.0", root, flags, setup.engine_options) for s in (0, 1)]
    spares = [Host(f"h{p.slot}.{p.index // 2 + 1}", root, flags, setup.engine_options)
              for p in plan]
    fleet = Fleet()
    try:
        start_all(hosts + spares)
        warm(hosts, setup.warmup)
        for slot, host in enumerate(hosts):
            fleet.serve(slot, host)
        t0 = time.monotonic() + LEAD_S
        chaos = Chaos(fleet, plan, spares, setup.timing, t0)
        chaos.start()
        try:
            records = replay(setup.workload, fleet, t0)
        finally:
            chaos.stop.set()
            chaos.join(setup.timing.replace_s + 30)
        if chaos.error is not None:
            raise chaos.error
        return RunResult(mode, records, t0, chaos.events)
    finally:
        stop_all(hosts + spares)


def warm(hosts: list[Host], requests: tuple[E2ERequest, ...]) -> None:
    """Send every request to every host, one at a time per host (the hosts side by side),
    unmeasured: the hosts start the replay as a fleet that has been serving, not cold."""
    def one(host: Host) -> None:
        fleet = Fleet()
        fleet.serve(0, host)
        for r in requests:
            complete(r, time.monotonic(), fleet)

    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        for f in [pool.submit(one, h) for h in hosts]:
            f.result(timeout=REQUEST_TIMEOUT_S)


def replay(workload: Workload, fleet: Fleet, t0: float) -> list[Record]:
    """Every request at ``t0 + arrival_s`` (open loop), each in a client thread."""
    with ThreadPoolExecutor(max_workers=min(MAX_CLIENT_THREADS, len(workload))) as pool:
        futures = []
        for r in workload.requests:
            time.sleep(max(0.0, t0 + r.arrival_s - time.monotonic()))
            futures.append(pool.submit(complete, r, t0 + r.arrival_s, fleet))
        return [f.result(timeout=REQUEST_TIMEOUT_S) for f in futures]


class Chaos(threading.Thread):
    """Applies the schedule: at each notice the host leaves the fleet and drains (POST with the
    deadline), gets SIGTERM at ``term_s`` and is taken back (SIGKILL, daemon too) at the end of
    the grace; its replacement joins the fleet ``replace_s`` after the notice. A notice waits
    (bounded) until the other slot is in service. ``events``: what happened, and when."""

    def __init__(self, fleet: Fleet, plan: tuple[Preemption, ...], spares: list[Host],
                 timing: Timing, t0: float) -> None:
        super().__init__(name="preempt-chaos", daemon=True)
        self.fleet, self.plan, self.spares, self.timing, self.t0 = fleet, plan, spares, timing, t0
        self.stop = threading.Event()
        self.events: list[dict[str, Any]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for p, spare in zip(self.plan, self.spares, strict=True):
                if not self._until(self.t0 + p.notice_s):
                    return
                if not self.fleet.wait_serving(1 - p.slot, PICK_TIMEOUT_S):
                    raise TimeoutError(f"slot {1 - p.slot} not in service at notice {p.index}")
                if not self._preempt(p, spare):
                    return
        except BaseException as e:  # reported by run_mode after the replay
            self.error = e

    def _preempt(self, p: Preemption, spare: Host) -> bool:
        t = self.timing
        notice = time.monotonic()
        host = self.fleet.withdraw(p.slot)
        assert host is not None, f"slot {p.slot} had no host at notice {p.index}"
        drained: dict[str, Any] = {}
        drain = threading.Thread(target=lambda: drained.update(host.drain(t.drain_deadline_s)),
                                 daemon=True)
        drain.start()
        event = {"index": p.index, "slot": p.slot, "host": host.name, "spare": spare.name,
                 "notice_s": notice - self.t0}
        self.events.append(event)
        if self._until(notice + t.term_s):
            host.terminate()
        self._until(notice + t.grace_s)
        host.take_back()  # the end of the grace (or of the run): the host is gone
        event["gone_s"] = time.monotonic() - self.t0
        drain.join(15)
        event["drain"] = drained
        if not self._until(notice + t.replace_s):
            return False
        self.fleet.serve(p.slot, spare)
        event["up_s"] = time.monotonic() - self.t0
        return True

    def _until(self, when: float) -> bool:
        """Sleep until ``when``; False if the run stopped first."""
        return not self.stop.wait(max(0.0, when - time.monotonic()))
