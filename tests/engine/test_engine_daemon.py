"""Lossless serving with a real daemon process, real shared memory and real LMDB files.

Every test compares greedy tokens with a no-cache run whose margins are asserted
(``engine_fixtures.reference``) and checks where the prompt's blocks came from.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lmdb
import pytest

from asymcache.cacheserver.blocks import block_keys
from asymcache.cacheserver.protocol import Where
from asymcache.engine.client import CacheClient
from tests.engine.engine_fixtures import (
    assert_same,
    corpus_ids,
    greedy,
    make_llm,
    reference,
)

N, LEN, OUT, B = 2, 200, 16, 16
FULL = (LEN // B) * B  # 192 tokens in full blocks; 8 more are always new


@pytest.fixture(scope="module")
def prompts():
    llm = make_llm(reuse="none")
    out = corpus_ids(llm, 2 * N, LEN, offset=7)
    llm.close()
    return out


@pytest.fixture(scope="module")
def ref(prompts):
    return reference(prompts, OUT)


def _flush(endpoint: str) -> None:
    with CacheClient(endpoint, heartbeat=False) as c:
        c.flush()


def test_blocks_only_in_the_cpu_tier_are_fetched(daemons, prompts, ref) -> None:
    daemons.start()
    prompts, ref = prompts[:N], ref[:N]
    with make_llm(cache_endpoint=daemons.endpoint) as a:
        assert_same(a.generate(prompts, greedy(OUT)), ref)
    with make_llm(cache_endpoint=daemons.endpoint) as b:  # a fresh pool: nothing resident
        outs = b.generate(prompts, greedy(OUT))
    assert_same(outs, ref)
    assert [o.stats.fetched_tokens for o in outs] == [FULL] * N
    assert all(o.stats.bytes_fetched == FULL // B * 32768 for o in outs)


def test_blocks_only_on_disk_and_a_corrupted_entry(daemons, prompts, ref) -> None:
    prompts, ref = prompts[:N], ref[:N]
    daemons.start(disk_write_through="true")
    with make_llm(cache_endpoint=daemons.endpoint) as a:
        assert_same(a.generate(prompts, greedy(OUT)), ref)
    _flush(daemons.endpoint)
    daemons.procs[-1].stop()  # the CPU tier is gone; LMDB keeps every block
    ns = make_llm(reuse="none").engine.kv.namespace("")
    _corrupt(Path(daemons.data_dir) / "blocks.lmdb", block_keys(ns, prompts[1], B)[5])
    daemons.start(disk_write_through="true")
    with make_llm(cache_endpoint=daemons.endpoint) as b:
        outs = b.generate(prompts, greedy(OUT))
    assert_same(outs, ref)
    assert outs[0].stats.fetched_tokens == FULL
    assert (outs[1].stats.fetched_tokens, outs[1].stats.recomputed_tokens) == (FULL - B, B)


def test_daemon_killed_mid_run_then_restarted(daemons, prompts, ref) -> None:
    first, later = prompts[:N], prompts[N:]
    daemons.start(disk_write_through="true")
    llm = make_llm(cache_endpoint=daemons.endpoint)
    assert_same(llm.generate(first, greedy(OUT)), ref[:N])
    _flush(daemons.endpoint)
    engine = llm.engine
    for i, p in enumerate(later):
        engine.add_request(f"r{i}", p, greedy(OUT))
    done = {o.request_id: o for o in engine.step() if o.finished}
    daemons.procs[-1].kill()  # SIGKILL mid-run: no goodbye, no flush
    for _ in range(500):
        done.update({o.request_id: o for o in engine.step() if o.finished})
        if len(done) == len(later):
            break
    assert_same([done[f"r{i}"] for i in range(len(later))], ref[N:])
    again = llm.generate(later, greedy(OUT))  # daemon down: served from the own pool
    assert not engine.kv.link.connected  # its one-way requests went unacknowledged
    assert_same(again, ref[N:])
    assert [o.stats.resident_tokens for o in again] == [FULL] * len(later)
    daemons.start(disk_write_through="true")
    _step_until_connected(llm)
    with CacheClient(daemons.endpoint, heartbeat=False) as c:  # the pool's keys re-announced
        assert c.stats()["tiers"]["gpu"]["blocks"] == len(engine.kv.held()) > 0
    llm.close()
    with make_llm(cache_endpoint=daemons.endpoint) as fresh:  # disk hits again
        outs = fresh.generate(first, greedy(OUT))
    assert_same(outs, ref[:N])
    assert [o.stats.fetched_tokens for o in outs] == [FULL] * N


def test_two_engine_processes_reuse_each_others_blocks(daemons, prompts, ref) -> None:
    prompts, ref = prompts[:N], ref[:N]
    daemons.start()
    child = _child(daemons.endpoint, [prompts[0]])  # the child computes prompt 0
    assert child[0]["token_ids"] == ref[0] and child[0]["new"] == LEN
    with make_llm(cache_endpoint=daemons.endpoint) as llm:
        outs = llm.generate(prompts, greedy(OUT))  # this process computes prompt 1
    assert_same(outs, ref)
    assert (outs[0].stats.fetched_tokens, outs[1].stats.new_tokens) == (FULL, LEN)
    child = _child(daemons.endpoint, [prompts[1]])
    assert child[0]["token_ids"] == ref[1] and child[0]["fetched"] == FULL


def _child(endpoint: str, prompts: list[list[int]]) -> list[dict]:
    spec = json.dumps({"endpoint": endpoint, "prompts": prompts, "max_tokens": OUT})
    run = subprocess.run([sys.executable, "-m", "tests.engine.engine_child", spec],
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])["outputs"]


def _step_until_connected(llm, limit_s: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + limit_s
    while not llm.engine.kv.link.connected:
        assert time.monotonic() < deadline, "the engine did not re-register with the daemon"
        llm.engine.step()
        time.sleep(0.05)


def _corrupt(path: Path, key: bytes) -> None:
    """Flip the last byte of one block's LMDB value (the daemon is stopped)."""
    env = lmdb.open(str(path), subdir=True, max_dbs=3, map_size=1 << 30)
    try:
        data = env.open_db(b"data")
        with env.begin(write=True, db=data) as txn:
            value = bytearray(txn.get(key))
            value[-1] ^= 0xFF
            txn.put(key, bytes(value))
    finally:
        env.close()


def test_an_absent_daemon_is_joined_when_it_appears(daemons, prompts, ref) -> None:
    prompts, ref = prompts[:N], ref[:N]
    llm = make_llm(cache_endpoint=daemons.endpoint, daemon_timeout_s=0.3)
    assert_same(llm.generate(prompts, greedy(OUT)), ref)  # nothing listens yet: local serving
    assert not llm.engine.kv.link.connected
    daemons.start()
    _step_until_connected(llm)
    with CacheClient(daemons.endpoint, heartbeat=False) as c:
        assert c.stats()["tiers"]["gpu"]["blocks"] == len(llm.engine.kv.held()) > 0
    llm.close()


def test_victims_named_by_the_daemon_are_demoted_then_fetched(daemons, prompts, ref) -> None:
    daemons.start()
    # 3 prompts × 14 blocks do not fit 30 slots: admitting later prompts evicts earlier blocks;
    # without write-through, the daemon has them demoted to the CPU tier first.
    with make_llm(cache_endpoint=daemons.endpoint, num_gpu_blocks=30,
                  write_through=False) as llm:
        first = llm.generate(prompts[:3], greedy(OUT))
        again = llm.generate(prompts[:1], greedy(OUT))[0]
    assert_same(first, ref[:3])
    assert again.token_ids == ref[0]
    assert sum(o.stats.bytes_demoted for o in first) > 0
    assert again.stats.fetched_tokens > 0
    assert again.stats.fetched_tokens + again.stats.resident_tokens == FULL


def test_tenants_never_share_blocks_in_any_tier(daemons, prompts, ref) -> None:
    daemons.start(disk_write_through="true")
    with make_llm(cache_endpoint=daemons.endpoint) as a:
        a.generate(prompts[:1], greedy(OUT, cache_salt="tenant-a"))
    with make_llm(cache_endpoint=daemons.endpoint) as b:
        other = b.generate(prompts[:1], greedy(OUT, cache_salt="tenant-b"))[0]
        same = b.generate(prompts[:1], greedy(OUT, cache_salt="tenant-a"))[0]
    assert other.token_ids == same.token_ids == ref[0]
    assert (other.stats.fetched_tokens, other.stats.new_tokens) == (0, LEN)
    assert same.stats.fetched_tokens == FULL


def test_an_engine_that_cannot_map_the_cpu_tier_uses_put_and_get(daemons, prompts, ref) -> None:
    daemons.start()
    with make_llm(cache_endpoint=daemons.endpoint) as a:
        a.engine.kv.link.mapped = False  # as on another host: bytes travel in messages
        written = a.generate(prompts[:1], greedy(OUT))[0]
    with make_llm(cache_endpoint=daemons.endpoint) as b:
        b.engine.kv.link.mapped = False
        fetched = b.generate(prompts[:1], greedy(OUT))[0]
    assert written.token_ids == fetched.token_ids == ref[0]
    assert written.stats.bytes_offloaded > 0
    assert fetched.stats.fetched_tokens == FULL


def test_an_engine_going_idle_writes_its_last_blocks_through(daemons, prompts, ref) -> None:
    """The write-through CPU slots of the last step come in an ACK after it: the engine fills
    them before it idles, so another engine fetches every block while the first still runs."""
    daemons.start()
    with make_llm(cache_endpoint=daemons.endpoint) as a:
        assert_same(a.generate(prompts[:1], greedy(2)), [r[:2] for r in ref[:1]])
        keys = block_keys(a.engine.kv.namespace(""), prompts[0], a.engine.kv.block_size)
        with CacheClient(daemons.endpoint, heartbeat=False) as c:
            c.hello(a.engine.kv.fingerprint, a.engine.kv.pool.layout, 4)
            assert set(c.lookup(keys, lease=False).where) == {Where.CPU}
        with make_llm(cache_endpoint=daemons.endpoint) as b:
            out = b.generate(prompts[:1], greedy(2))
        assert_same(out, [r[:2] for r in ref[:1]])
        assert out[0].stats.fetched_tokens == FULL


def test_an_engine_with_curve_keys_is_served_by_a_protected_daemon(daemons, prompts, ref,
                                                                    tmp_path: Path) -> None:
    import shutil

    import zmq.auth

    from asymcache.cacheserver.protocol.sockets import ClientCurve
    from tests.cacheserver.daemon_fixtures import free_port

    keys, allowed = tmp_path / "keys", tmp_path / "allowed"
    keys.mkdir()
    allowed.mkdir()
    server_pub, server_sec = zmq.auth.create_certificates(str(keys), "server")
    engine_pub, engine_sec = zmq.auth.create_certificates(str(keys), "engine")
    shutil.copy(engine_pub, allowed / "engine.key")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    curve = {"curve_server_key_file": server_pub, "curve_client_key_file": engine_sec}
    daemons(endpoint=endpoint, curve=ClientCurve.from_files(server_pub, engine_sec),
            curve_secret_key_file=server_sec, curve_clients_dir=str(allowed))
    prompts, ref = prompts[:N], ref[:N]
    with make_llm(cache_endpoint=endpoint, **curve) as a:
        assert_same(a.generate(prompts, greedy(OUT)), ref)
    with make_llm(cache_endpoint=endpoint, **curve) as b:  # a fresh pool: from the CPU tier
        outs = b.generate(prompts, greedy(OUT))
    assert_same(outs, ref)
    assert [o.stats.fetched_tokens for o in outs] == [FULL] * N
    with make_llm(cache_endpoint=endpoint) as c:  # no keys: no handshake, no cache
        outs = c.generate(prompts, greedy(OUT))
    assert_same(outs, ref)
    assert [o.stats.fetched_tokens for o in outs] == [0] * N
    with pytest.raises(ValueError, match="curve_client_key_file"):
        make_llm(cache_endpoint=endpoint, curve_server_key_file=server_pub)
