"""The cache-aware router (ops/route.py) on a real daemon's KV events: where each engine finds a
prompt's blocks, and which engine it picks."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from asymcache.cacheserver.blocks import namespace_id
from asymcache.ops.route import Backend, CacheAwareRouter
from tests.cacheserver.daemon_fixtures import LAYOUT, make_refs, payload, registered_client


def backend(name: str, host: str = "h") -> Backend:
    return Backend(name, host, LAYOUT.block_size,
                   lambda salt: namespace_id("test-model", LAYOUT, salt))


def tokens(n_blocks: int, start: int) -> list[int]:  # the prompt of make_refs(n, start=start)
    return list(range(start, start + n_blocks * LAYOUT.block_size))


def settle(router: CacheAwareRouter, keys: list[bytes], timeout_s: float = 20.0) -> None:
    """Until the router's index has every one of ``keys`` (events arrive asynchronously)."""
    deadline = time.monotonic() + timeout_s
    places = router.index["h"].places
    while not all(k in places for k in keys) and time.monotonic() < deadline:
        router.refresh()
        time.sleep(0.02)


@pytest.fixture
def host(start_daemon, tmp_path):
    ev, rp = f"ipc://{tmp_path}/ev.ipc", f"ipc://{tmp_path}/rp.ipc"
    d = start_daemon(events_endpoint=ev, events_replay_endpoint=rp)
    return d, ev, rp


def test_router_finds_each_engines_blocks_and_picks_by_work(host) -> None:
    d, ev, rp = host
    e0, e1 = registered_client(d.endpoint, "e0", 8), registered_client(d.endpoint, "e1", 8)
    gpu_prompt, cpu_prompt = make_refs(4, start=0), make_refs(4, start=5000)
    e1.commit(gpu_prompt, [0, 1, 2, 3])  # in e1's GPU pool only
    e0.put(cpu_prompt[:2], [payload(r) for r in cpu_prompt[:2]])  # in the shared CPU tier
    router = CacheAwareRouter([backend("e0"), backend("e1")], {"h": (ev, rp)})
    try:
        settle(router, [r.key for r in gpu_prompt + cpu_prompt[:2]])
        _check_router(router)
    finally:
        router.close()
        e0.close()
        e1.close()


def _check_router(router: CacheAwareRouter) -> None:
    hot = tokens(4, 0)
    assert router.where(router.backends[1], hot) == ["GPU"] * 4
    assert router.where(router.backends[0], hot) == [None] * 4
    choice = router.choose(hot)
    assert (choice.backend.name, choice.cached_tokens, choice.tiers) == ("e1", 64, {"GPU": 4})
    # the cached prefix loses to a queue longer than the work it saves
    assert router.choose(hot, load=lambda b: 100 if b.name == "e1" else 0).backend.name == "e0"
    # both find the CPU blocks: equal work, so round robin between them
    warm = tokens(4, 5000)
    picks = {router.choose(warm).backend.name for _ in range(2)}
    assert picks == {"e0", "e1"}
    assert router.cached(router.backends[0], warm) == (32, {"CPU": 2})
    # another tenant's prompt with the same tokens finds nothing
    assert router.where(router.backends[1], hot, cache_salt="other") == [None] * 4


def test_prefix_mode_counts_only_the_leading_run(host) -> None:
    d, ev, rp = host
    c = registered_client(d.endpoint, "e0", 8)
    refs = make_refs(4, start=0)
    c.put([refs[0], refs[2], refs[3]], [payload(r) for r in (refs[0], refs[2], refs[3])])
    hosts = {"h": (ev, rp)}
    blocks, prefix = (CacheAwareRouter([backend("e0")], hosts, mode=m)
                      for m in ("blocks", "prefix"))
    for r in (blocks, prefix):
        settle(r, [refs[0].key, refs[2].key, refs[3].key])
    prompt = tokens(4, 0)
    assert blocks.cached(blocks.backends[0], prompt) == (48, {"CPU": 3})
    assert prefix.cached(prefix.backends[0], prompt) == (16, {"CPU": 1})
    with pytest.raises(ValueError, match="no event endpoints for host"):
        CacheAwareRouter([backend("e0", host="elsewhere")], hosts)
    blocks.close()
    prefix.close()
    c.close()


@pytest.mark.slow
def test_bench_route_runs_both_policies_with_identical_outputs(tmp_path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "asymcache.ops.cli", "bench", "route",
                           "--quick", "--rounds", "1", "--setups", "one-daemon", "--rate", "8",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    import json

    result = json.loads((out / "route.json").read_text())
    assert [(r["setup"], r["policy"]) for r in result["rows"]] == [
        ("one-daemon", "round-robin"), ("one-daemon", "router")]
    assert result["setups"]["one-daemon"]["mismatches"] == []
    assert all(r["cached_share"] > 0 for r in result["rows"])
    assert (out / "route.png").stat().st_size > 10_000
