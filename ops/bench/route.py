"""``asymcache bench route``: the cache-aware router (``ops/route.py``) against round robin.

Two engines (AsymCache's configuration 4: MSA reuse, asym policy, tiers, adaptive chunking)
serve one workload, in two set-ups:

* ``one-daemon``: both engines behind one daemon (one host: a shared CPU and disk tier);
* ``two-daemons``: each engine behind its own daemon (two hosts), the daemons sharing a
  three-node Redis Cluster as their remote tier (needs ``redis-server``);
* ``two-hosts``: each engine behind its own daemon, nothing shared between them (not run by
  default): what a router gains when a host finds only its own blocks.

Each request is sent, at its arrival, to an engine chosen by round robin or by the router from
the daemons' KV events. Both engines live in this process, each stepped by its own thread with
one CPU thread for its kernels, so they compute side by side as two devices would; the arrival
rate is twice what keeps one engine about 60% busy (calibrated on configuration 1, as
``bench e2e`` does). Every run starts from fresh daemons
and engines. Reported per set-up and policy: the share of prompt tokens served from cache
(resident or fetched), mean and p90 TTFT, and per round the ratio round robin / router of
mean TTFT; rounds alternate which policy runs first, and the goal ratio is their median.
Greedy outputs of every request must be identical under both policies.
"""

from __future__ import annotations

import argparse
import json
import queue
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from asymcache.engine.engine import LLMEngine
    from asymcache.ops.e2e.driver import Outcome
    from asymcache.ops.e2e.runner import RunSetup
    from asymcache.ops.e2e.workload import Workload
    from asymcache.ops.route import CacheAwareRouter

NAME = "route"
HELP = "cache-aware routing from KV events against round robin, two engines (one or two hosts)"
SETUPS = ("one-daemon", "two-daemons", "two-hosts")
DEFAULT_SETUPS = ("one-daemon", "two-daemons")
POLICIES = ("round-robin", "router")
ENGINES = ("e0", "e1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workload", default="chat", help="chat, longctx, agent, mooncake, "
                        "quick (default chat)")
    parser.add_argument("--requests", type=int, default=80)
    parser.add_argument("--rounds", type=int, default=3, help="paired rounds (>= 3 decide)")
    parser.add_argument("--setups", default=",".join(DEFAULT_SETUPS),
                        help=f"comma-separated, of {', '.join(SETUPS)}")
    parser.add_argument("--mode", default="blocks", choices=("blocks", "prefix"),
                        help="what the router counts as cached (MSA: every block)")
    parser.add_argument("--rate", type=float, default=None,
                        help="arrivals per second (default: calibrated to 60%% busy)")
    parser.add_argument("--quick", action="store_true",
                        help="the small chat workload, 40 requests")
    parser.add_argument("--out", default="bench-route", help="folder for JSON and PNG")


def run(args: argparse.Namespace) -> int:
    from asymcache.cacheserver.policy.cost import CostModel
    from asymcache.ops.e2e.calibrate import first_rate, measure_profile
    from asymcache.ops.e2e.experiment import Plan, capacities
    from asymcache.ops.e2e.runner import RunSetup
    from asymcache.ops.e2e.sources import SourceSpec, build

    setups = [s for s in args.setups.split(",") if s]
    if bad := [s for s in setups if s not in SETUPS]:
        raise SystemExit(f"unknown set-up(s) {bad}; known: {list(SETUPS)}")
    if "two-daemons" in setups and shutil.which("redis-server") is None:
        raise SystemExit("two-daemons needs redis-server (apt-get install redis-server)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name, n = ("quick", 40) if args.quick else (args.workload, args.requests)
    base = build(name, SourceSpec(requests=n))
    profile = measure_profile(out / "cost-profile.json", quick=True)
    block_bytes = CostModel.from_profile(profile).kv_bytes_per_token * base.block_size
    plan = Plan(configs=(), source=SourceSpec(requests=n))
    setup = RunSetup(capacities(base, plan, block_bytes), str(profile))
    rate = args.rate or len(ENGINES) * first_rate(base, setup, plan.target_busy,
                                                  plan.calib_sample)[0]
    workload = base.at_rate(rate)
    print(f"[route] {base.name}: {len(workload)} requests at {rate:.2f}/s; tiers per host: "
          f"gpu {setup.capacities.gpu_blocks}, cpu {setup.capacities.cpu_blocks}, disk "
          f"{setup.capacities.disk_blocks} blocks; router mode {args.mode}", flush=True)
    rows: list[dict] = []
    for r in range(args.rounds):
        for s in setups:
            order = POLICIES if r % 2 == 0 else POLICIES[::-1]
            for policy in order:
                t0 = time.perf_counter()
                row = run_one(s, policy, workload, setup, args.mode)
                rows.append({"round": r, **row})
                print(f"  round {r + 1}/{args.rounds} {s:<11} {policy:<11} cached "
                      f"{row['cached_share']:.1%} mean TTFT {row['ttft_mean_ms']:.0f} ms "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
    result = summarize(rows, setups)
    (out / "route.json").write_text(json.dumps({"workload": base.name, "rate": rate,
                                                "mode": args.mode, "rows": rows, **result},
                                               indent=1, default=_plain))
    print_table(rows, result, setups)
    plot(rows, setups, out / "route.png")
    print(f"[route] wrote {out / 'route.json'} and {out / 'route.png'}")
    return 0 if all(not v["mismatches"] for v in result["setups"].values()) else 1


def run_one(setup_name: str, policy: str, workload: Workload, setup: RunSetup,
            mode: str) -> dict:
    """One replay on fresh daemons and engines; figures of the row, outputs kept."""
    with _hosts(setup_name, setup) as hosts:
        engines = {e: _engine(setup, e, hosts[_host_of(setup_name, e)][0]) for e in ENGINES}
        pick, router = _picker(policy, engines, hosts, setup_name, mode)
        try:
            outcomes = drive(engines, workload, pick)
        finally:
            if router is not None:
                router.close()
            for eng in engines.values():
                eng.close()
    prompt = sum(len(r.prompt) for r in workload.requests)
    cached = sum(o.sources["resident"] + o.sources["fetched"] for o in outcomes)
    ttfts = sorted(o.ttft for o in outcomes)
    return {"setup": setup_name, "policy": policy, "cached_share": cached / prompt,
            "ttft_mean_ms": 1e3 * statistics.fmean(ttfts),
            "ttft_p90_ms": 1e3 * ttfts[int(0.9 * (len(ttfts) - 1))],
            "outputs": [o.token_ids for o in outcomes]}


def _host_of(setup_name: str, engine: str) -> str:
    return "h0" if setup_name == "one-daemon" else f"h{ENGINES.index(engine)}"


def _shared_remote(setup_name: str) -> bool:
    return setup_name == "two-daemons"


Pick = Callable[[object, dict[str, int]], tuple[str, int]]


def _picker(policy: str, engines: dict[str, LLMEngine], hosts: dict[str, tuple[str, str, str]],
            setup_name: str, mode: str) -> tuple[Pick, CacheAwareRouter | None]:
    """The policy's choice of engine per request, and the router to close (if any)."""
    if policy == "round-robin":
        turn = iter(range(10**9))
        return lambda req, load: (ENGINES[next(turn) % len(ENGINES)], len(req.prompt)), None
    from asymcache.ops.route import Backend, CacheAwareRouter

    backends = [Backend(e, _host_of(setup_name, e), engines[e].kv.block_size,
                        engines[e].kv.namespace) for e in ENGINES]
    router = CacheAwareRouter(backends, {h: (ev, rp) for h, (_, ev, rp) in hosts.items()},
                              mode=mode, shared_remote=_shared_remote(setup_name))

    def pick(req, load: dict[str, int]) -> tuple[str, int]:
        choice = router.choose(req.prompt, load=lambda b: load[b.name])
        return choice.backend.name, len(req.prompt) - choice.cached_tokens

    return pick, router


def drive(engines: dict[str, LLMEngine], workload: Workload,
          pick: Pick, stall_s: float = 300.0
          ) -> list[Outcome]:
    """Open-loop replay over several in-process engines, each stepped by its own thread (the
    model's kernels release the GIL, so engines compute side by side as on separate devices).
    ``pick(request, load)`` names the engine at the request's arrival and the prefill tokens
    it expects there; ``load`` is each engine's expected tokens of requests without a first
    token yet."""
    clock = time.monotonic
    load = dict.fromkeys(engines, 0)
    lock = threading.Lock()
    done: dict[str, Outcome] = {}

    work: dict[str, int] = {}

    def first_token(e: str, request_id: str) -> None:
        with lock:
            load[e] -= work.pop(request_id)

    workers = {e: _Worker(eng, first_token, done, e) for e, eng in engines.items()}
    for w in workers.values():
        w.start()
    try:
        t0 = clock() + 0.05
        for r in workload.requests:
            time.sleep(max(0.0, t0 + r.arrival_s - clock()))
            with lock:
                e, tokens = pick(r, dict(load))
                load[e] += tokens
                work[r.request_id] = tokens
            workers[e].inbox.put((r, t0 + r.arrival_s))
        deadline = clock() + stall_s
        while len(done) < len(workload) and clock() < deadline:
            if any(w.error for w in workers.values()):
                break
            time.sleep(0.01)
    finally:
        for w in workers.values():
            w.inbox.put(None)
        for w in workers.values():
            w.join()
    for w in workers.values():
        if w.error is not None:
            raise w.error
    if len(done) < len(workload):
        raise TimeoutError(f"{len(workload) - len(done)} requests unfinished after {stall_s} s")
    return [done[r.request_id] for r in workload.requests]


class _Worker(threading.Thread):
    """Steps one engine: takes requests from ``inbox`` (``None``: stop once idle), reports
    each first token and records each finished request."""

    def __init__(self, engine: LLMEngine, first_token: Callable[[str, str], None],
                 done: dict[str, Outcome], name: str) -> None:
        super().__init__(name=f"engine-{name}", daemon=True)
        self.engine, self.first_token, self.done, self.key = engine, first_token, done, name
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.error: BaseException | None = None

    def run(self) -> None:
        from asymcache.ops.e2e.driver import _outcome, _params

        live: dict[str, tuple[object, float]] = {}
        started: set[str] = set()
        stopping = False
        try:
            while live or not stopping:
                while True:
                    try:
                        item = self.inbox.get(timeout=0.005) if not live else \
                            self.inbox.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stopping = True
                        break
                    r, due = item
                    self.engine.add_request(r.request_id, list(r.prompt), _params(r, False, None))
                    live[r.request_id] = (r, due)
                if not live:
                    continue
                for out in self.engine.step():
                    r, due = live[out.request_id]
                    if out.token_ids and out.request_id not in started:
                        started.add(out.request_id)
                        self.first_token(self.key, out.request_id)
                    if out.finished:
                        del live[out.request_id]
                        self.done[out.request_id] = _outcome(out, due)
        except BaseException as e:  # reported to the driver, which stops the run
            self.error = e


def _engine(setup: RunSetup, engine_id: str, endpoint: str) -> LLMEngine:
    from asymcache.engine.config import EngineConfig
    from asymcache.engine.engine import LLMEngine
    from asymcache.ops.e2e.configs import CONFIGS
    from asymcache.ops.e2e.runner import warm_up

    cfg = next(c for c in CONFIGS if c.key == "4")
    engine = LLMEngine(EngineConfig.from_kwargs(**setup.engine_options(cfg, endpoint),
                                                engine_id=engine_id))
    warm_up(engine)
    return engine


@contextmanager
def _hosts(setup_name: str, setup: RunSetup) -> Iterator[dict[str, tuple[str, str, str]]]:
    """Fresh daemons: host -> (endpoint, events endpoint, replay endpoint)."""
    from asymcache.ops.daemon_process import DaemonProcess
    from asymcache.ops.e2e.configs import lmdb_entry_bytes

    tmp = tempfile.mkdtemp(prefix="acroute-")
    caps = setup.capacities
    flags = caps.daemon_flags("asym", lmdb_entry_bytes(caps.block_bytes))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, tmp, True)
        if setup_name == "two-daemons":
            from asymcache.ops.bench.redis_cluster import LocalRedisCluster

            cluster = LocalRedisCluster(f"{tmp}/redis").start()
            stack.callback(cluster.close)
            flags = {**flags, "remote_nodes": ",".join(cluster.nodes),
                     "remote_capacity_bytes": 4 * caps.unique_blocks * caps.block_bytes}
        hosts = {}
        for h in sorted({_host_of(setup_name, e) for e in ENGINES}):
            ipc = f"ipc://{tmp}/{h}"
            daemon = DaemonProcess(f"{ipc}.ipc", f"{tmp}/{h}-data", log_path=f"{tmp}/{h}.log",
                                   flags={**flags, "metrics_port": 0,
                                          "events_endpoint": f"{ipc}-ev.ipc",
                                          "events_replay_endpoint": f"{ipc}-rp.ipc"})
            daemon.start()
            stack.callback(daemon.stop)
            hosts[h] = (daemon.endpoint, f"{ipc}-ev.ipc", f"{ipc}-rp.ipc")
        yield hosts


def summarize(rows: list[dict], setups: list[str]) -> dict:
    """Per set-up: each round's ratio round robin / router (mean TTFT), the median, cached
    shares, and the requests whose outputs differ between the policies."""
    out: dict[str, dict] = {}
    for s in setups:
        by = {(r["round"], r["policy"]): r for r in rows if r["setup"] == s}
        rounds = sorted({k[0] for k in by})
        ratios = [by[(r, "round-robin")]["ttft_mean_ms"] / by[(r, "router")]["ttft_mean_ms"]
                  for r in rounds]
        mismatches = [i for r in rounds for i, (a, b) in enumerate(zip(
            by[(r, "round-robin")]["outputs"], by[(r, "router")]["outputs"], strict=True))
            if a != b]
        out[s] = {"ttft_ratio_rr_over_router": ratios,
                  "ttft_ratio_median": statistics.median(ratios),
                  "cached_share": {p: statistics.median(by[(r, p)]["cached_share"]
                                                        for r in rounds) for p in POLICIES},
                  "mismatches": mismatches}
    return {"setups": out}


def print_table(rows: list[dict], result: dict, setups: list[str]) -> None:
    print(f"\n{'set-up':<12} {'policy':<12} {'round':>5} {'cached':>7} {'TTFT mean':>10} "
          f"{'p90':>8}")
    for r in rows:
        print(f"{r['setup']:<12} {r['policy']:<12} {r['round'] + 1:>5} {r['cached_share']:>7.1%}"
              f" {r['ttft_mean_ms']:>8.0f}ms {r['ttft_p90_ms']:>6.0f}ms")
    for s in setups:
        v = result["setups"][s]
        rounds = " ".join(f"{x:.2f}" for x in v["ttft_ratio_rr_over_router"])
        same = "identical" if not v["mismatches"] else f"DIFFER in {len(v['mismatches'])}"
        print(f"{s}: mean TTFT round robin / router per round {rounds}, median "
              f"{v['ttft_ratio_median']:.2f}; cached share router "
              f"{v['cached_share']['router']:.1%} vs round robin "
              f"{v['cached_share']['round-robin']:.1%}; outputs {same}")


def plot(rows: list[dict], setups: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "ttft_mean_ms", "mean TTFT (ms)"),
                           (axes[1], "cached_share", "prompt tokens from cache")):
        for i, s in enumerate(setups):
            for j, p in enumerate(POLICIES):
                vals = [r[key] for r in rows if r["setup"] == s and r["policy"] == p]
                x = i * 3 + j
                ax.bar(x, statistics.median(vals), color=("tab:gray", "tab:blue")[j],
                       label=p if i == 0 else None)
                ax.plot([x] * len(vals), vals, "k.", markersize=4)
        ax.set_xticks([i * 3 + 0.5 for i in range(len(setups))], setups)
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle("cache-aware routing vs round robin (bars: median of rounds, dots: rounds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plain(value: object) -> object:
    return str(value)
