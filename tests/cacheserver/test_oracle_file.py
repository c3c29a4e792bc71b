"""The oracle file of the belady-bound benchmark daemon: its format, the configuration that
accepts it, and a real daemon whose tier evicts by it."""

from __future__ import annotations

import math
import time
from pathlib import Path

import msgpack
import pytest

from asymcache.cacheserver.config import ServerConfig
from asymcache.cacheserver.oracle_file import OracleFileError, read_oracle, write_oracle
from asymcache.cacheserver.protocol import Where
from asymcache.engine.client import CacheClient
from tests.cacheserver.daemon_fixtures import LAYOUT, make_refs, payload

K1, K2 = bytes(range(16)), bytes(range(1, 17))
HEADER = {"format": "asymcache-oracle", "version": 1, "clock": "monotonic", "t0": 5.0,
          "lag_s": 1.0}


def _raw(path: Path, doc: object) -> Path:
    path.write_bytes(msgpack.packb(doc, use_bin_type=True))
    return path


def test_oracle_file_round_trips_due_times_and_lag(tmp_path: Path) -> None:
    path = tmp_path / "o.msgpack"
    write_oracle(path, {K1: [10.0, 20.0], K2: [15.0]}, t0=5.0, lag_s=2.5)
    oracle = read_oracle(path)
    assert oracle.lag_s == 2.5 and len(oracle) == 2
    assert oracle.next_use(K1, 0.0) == 10.0
    assert oracle.next_use(K1, 11.0) == 10.0  # due 1 s ago, within the lag: still pending
    assert oracle.next_use(K1, 13.0) == 20.0  # lapsed after 2.5 s
    assert oracle.next_use(K2, 30.0) == math.inf
    assert oracle.next_use(bytes(16), 0.0) == math.inf  # a key no request contains


@pytest.mark.parametrize(("doc", "problem"), [
    ([1, 2, 3], "not a msgpack map"),
    ({**HEADER, "format": "other", "uses": {}}, "format 'other'"),
    ({**HEADER, "version": 2, "uses": {}}, "version 2"),
    ({**HEADER, "clock": "wall", "uses": {}}, "clock 'wall'"),
    ({k: v for k, v in HEADER.items() if k != "lag_s"} | {"uses": {}}, "header lacks"),
    ({**HEADER, "lag_s": -1.0, "uses": {}}, "lag_s must be >= 0"),
    ({**HEADER, "uses": [1]}, "uses must be a map"),
    ({**HEADER, "uses": {b"short": [1.0]}}, "16 bytes"),
    ({**HEADER, "uses": {K1: [2.0, 1.0]}}, "must ascend"),
    ({**HEADER, "uses": {K1: []}}, "non-empty list"),
    ({**HEADER, "uses": {K1: ["x"]}}, "finite numbers"),
    ({**HEADER, "uses": {bytes(17): [1.0]}}, "not a msgpack oracle file"),  # over the bin limit
])
def test_bad_oracle_files_are_refused_naming_the_field(tmp_path: Path, doc: object,
                                                       problem: str) -> None:
    path = _raw(tmp_path / "bad.msgpack", doc)
    with pytest.raises(OracleFileError, match=rf"^oracle_file: .*{problem}"):
        read_oracle(path)


def test_unreadable_or_garbage_oracle_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(OracleFileError, match=r"oracle_file: .*cannot be read"):
        read_oracle(tmp_path / "missing")
    (tmp_path / "junk").write_bytes(b"\xc1\xc1\xc1")
    with pytest.raises(OracleFileError, match=r"oracle_file: .*not a msgpack oracle file"):
        read_oracle(tmp_path / "junk")


def test_belady_is_accepted_only_with_an_oracle_file_in_every_tier(tmp_path: Path) -> None:
    path = tmp_path / "o.msgpack"
    write_oracle(path, {K1: [1.0]}, t0=0.0, lag_s=1.0)
    assert ServerConfig(policy="belady", oracle_file=str(path)).oracle_file == str(path)
    with pytest.raises(ValueError, match=r"^policy: 'belady' needs the future"):
        ServerConfig(policy="belady")
    with pytest.raises(ValueError, match=r"^cpu_policy: 'belady' needs the future"):
        ServerConfig(cpu_policy="belady")
    with pytest.raises(ValueError, match=r"^oracle_file: only for a daemon whose every tier"):
        ServerConfig(policy="lru", oracle_file=str(path))
    with pytest.raises(ValueError, match=r"^oracle_file: .*'disk': 'lru'"):
        ServerConfig(policy="belady", disk_policy="lru", oracle_file=str(path))
    with pytest.raises(ValueError, match=r"^oracle_file: .* is not a file"):
        ServerConfig(policy="belady", oracle_file=str(tmp_path / "missing"))


def test_daemon_with_a_bad_oracle_file_exits_2_naming_the_field(start_daemon,
                                                                tmp_path: Path) -> None:
    bad = _raw(tmp_path / "bad.msgpack", {**HEADER, "version": 9, "uses": {}})
    with pytest.raises(RuntimeError, match=r"(?s)status 2.*oracle_file: .*version 9"):
        start_daemon(policy="belady", oracle_file=str(bad), disk_bytes=0)


def test_daemon_cpu_tier_evicts_the_block_used_furthest_in_the_future(start_daemon,
                                                                     tmp_path: Path) -> None:
    refs = make_refs(3)
    now = time.monotonic()  # the daemon's policy clock (CLOCK_MONOTONIC is system-wide)
    path = tmp_path / "o.msgpack"
    # next uses: block 0 in 100 s, block 1 in 300 s, block 2 in 200 s
    write_oracle(path, {refs[0].key: [now + 100], refs[1].key: [now + 300],
                        refs[2].key: [now + 200]}, t0=now, lag_s=5.0)
    d = start_daemon(policy="belady", oracle_file=str(path), cpu_bytes="16KiB", disk_bytes=0)
    with CacheClient(d.endpoint, engine_id="eng", timeout_s=10, heartbeat=False) as c:
        c.hello("test-model", LAYOUT, gpu_slots=2)
        for r in refs:  # two CPU slots: the third PUT makes room
            assert c.put([r], [payload(r)]).stored == [True]
        where = c.lookup([r.key for r in refs], lease=False).where
    # LRU would give up block 0 (the oldest); Belady gives up block 1 (needed last)
    assert where == [Where.CPU, Where.MISS, Where.CPU]
