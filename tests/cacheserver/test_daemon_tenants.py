"""Tenants in a real daemon: per-tenant quotas, purge across tiers and restarts, the registry.

Blocks are PUT by a registered client that said (TENANTS) which tenant each namespace belongs
to, as engines do. A purge runs through the real ``asymcache purge`` command. "Scrubbed" is
checked on the bytes of the LMDB data file: a purged block's payload is nowhere in it, another
tenant's still is.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

from asymcache.cacheserver.blocks import tenant_digest, tenant_label
from asymcache.cacheserver.protocol import BlockRef, ErrorCode, Where
from asymcache.cacheserver.tenants import FILE_NAME
from asymcache.engine.client import CacheClient, CacheClientError
from asymcache.ops.bench.redis_cluster import LocalRedisCluster
from tests.cacheserver.daemon_fixtures import free_port, make_refs, payload, registered_client
from tests.cacheserver.test_daemon_remote import remote_flags, wait_remote_ready
from tests.redis_cluster import unique_prefix


def register(c: CacheClient, *salts: str) -> None:
    refs = {salt: make_refs(1, salt=salt)[0] for salt in salts}
    assert c.tenants([refs[s].namespace for s in salts], [tenant_digest(s) for s in salts],
                     [tenant_label(s) for s in salts], model="tiny") == len(salts)


def put(c: CacheClient, refs: list[BlockRef], durable: bool = False) -> None:
    assert all(c.put(refs, [payload(r) for r in refs], durable=durable).stored)


def where(c: CacheClient, refs: list[BlockRef], remote: bool = False) -> list[Where]:
    return list(c.lookup([r.key for r in refs], lease=False, remote=remote).where)


def purge(endpoint: str, salt: str, *more: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "asymcache.ops.cli", "purge", "--endpoint",
                          endpoint, "--salt", salt, "--json", *more],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def test_a_tenant_at_its_cpu_quota_evicts_its_own_blocks_never_anothers(start_daemon) -> None:
    port = free_port()
    d = start_daemon(quotas_cpu_blocks=3, metrics_port=port)
    with registered_client(d.endpoint) as c:
        register(c, "salt-a", "salt-b")
        b = make_refs(3, salt="salt-b")
        a = make_refs(6, salt="salt-a")
        put(c, b)
        put(c, a)
        # LRU among A's own: its first three went down to disk; B's three stayed in the CPU
        assert where(c, b) == [Where.CPU] * 3
        assert where(c, a) == [Where.DISK] * 3 + [Where.CPU] * 3
        # an unregistered namespace is a tenant of its own ("unregistered") under the default
        u = make_refs(4, salt="nobody-said")
        put(c, u)
        assert where(c, u) == [Where.DISK] + [Where.CPU] * 3
        assert where(c, b) == [Where.CPU] * 3
    text = scrape(port)
    label_a = tenant_label("salt-a")
    assert f'asymcache_tenant_blocks{{tenant="{label_a}",tier="cpu"}} 3.0' in text
    assert f'asymcache_tenant_blocks{{tenant="{label_a}",tier="disk"}} 3.0' in text
    assert 'asymcache_tenant_blocks{tenant="unregistered",tier="cpu"} 3.0' in text
    assert 'asymcache_tenant_quota_evictions_total{tier="cpu"} 4.0' in text
    assert "asymcache_tenant_namespaces 2.0" in text


def test_purge_removes_a_tenant_from_cpu_and_disk_after_a_restart_and_scrubs_the_file(
        start_daemon, tmp_path: Path) -> None:
    d = start_daemon(cpu_bytes="16KiB")  # 2 CPU slots: the rest only on disk
    a, b = make_refs(6, salt="salt-a"), make_refs(6, salt="salt-b")
    with registered_client(d.endpoint) as c:
        register(c, "salt-a", "salt-b")
        put(c, a, durable=True)
        put(c, b, durable=True)
    d.stop()
    data_file = tmp_path / "data" / "blocks.lmdb" / "data.mdb"
    raw = data_file.read_bytes()
    assert all(payload(r) in raw for r in a + b)  # the check below can fail
    assert (tmp_path / "data" / FILE_NAME).exists()  # the registry outlives the daemon

    d2 = start_daemon(data_dir=tmp_path / "data", cpu_bytes="16KiB")  # no TENANTS this time
    with registered_client(d2.endpoint) as c:
        assert set(where(c, a)) == {Where.DISK}
        got = purge(d2.endpoint, "salt-a")
        assert got["namespaces"] == 1 and got["removed"]["disk"] == 6, got
        assert where(c, a) == [Where.MISS] * 6  # a later LOOKUP finds none
        assert set(where(c, b)) == {Where.DISK}  # the other tenant's are all there
        assert purge(d2.endpoint, "salt-a")["total"] == 0
        assert purge(d2.endpoint, "never-seen") == {"namespaces": 0, "removed": {
            "gpu": 0, "cpu": 0, "disk": 0, "remote": 0}, "total": 0}
    d2.stop()
    raw = data_file.read_bytes()
    assert not any(payload(r) in raw for r in a), "a purged value is still in the file"
    assert all(payload(r) in raw for r in b)
    d3 = start_daemon(data_dir=tmp_path / "data", cpu_bytes="16KiB")
    with registered_client(d3.endpoint) as c:
        assert where(c, a) == [Where.MISS] * 6
        assert set(where(c, b)) == {Where.DISK}


def test_purge_reaches_the_cpu_tier_and_engines_gpu_index_and_names_them_at_the_heartbeat(
        start_daemon) -> None:
    d = start_daemon()
    a, b = make_refs(3, salt="salt-a"), make_refs(3, salt="salt-b")
    with registered_client(d.endpoint, gpu_slots=8) as c:
        register(c, "salt-a", "salt-b")
        put(c, a + b)
        assert c.commit(a + b, list(range(6)), tier="gpu") == [True] * 6
        assert where(c, a) == [Where.GPU] * 3
        got = purge(d.endpoint, "salt-a", "--model", "tiny")
        assert got["removed"] == {"gpu": 3, "cpu": 3, "disk": 0, "remote": 0}
        assert where(c, a) == [Where.MISS] * 3 and where(c, b) == [Where.GPU] * 3
        pong = c.ping()
        assert pong.purged == [a[0].namespace] and pong.purge_seq > 0
        c.purged_upto = pong.purge_seq  # the engine dropped them: the next beat confirms
        assert c.ping().purged == []
        # a model the tenant has no blocks of purges nothing
        assert purge(d.endpoint, "salt-b", "--model", "another")["total"] == 0


def test_bad_tenant_registrations_get_errors_naming_the_field(start_daemon) -> None:
    d = start_daemon()
    with registered_client(d.endpoint) as c:
        ns = make_refs(1, salt="x")[0].namespace
        for labels, field in ((["x" * 65], "labels"), ([""], "labels"), (["a\nb"], "labels")):
            try:
                c.tenants([ns], [tenant_digest("x")], labels)
            except CacheClientError as e:
                assert field in str(e) and e.code in (ErrorCode.BAD_FIELD, ErrorCode.TOO_LARGE)
            else:
                raise AssertionError(f"{labels!r} was accepted")
        try:
            c.tenants([ns, ns], [tenant_digest("x")], ["x"])
        except CacheClientError as e:
            assert "as long" in str(e)
        else:
            raise AssertionError("lists of different lengths were accepted")
        assert c.tenants([ns], [tenant_digest("x")], ["x"]) == 1  # the daemon kept serving


def test_purge_deletes_every_hosts_blocks_of_the_tenant_from_the_remote_cluster(
        start_daemon, redis_cluster: LocalRedisCluster, tmp_path: Path) -> None:
    flags = remote_flags(redis_cluster, unique_prefix())
    h1 = start_daemon(data_dir=tmp_path / "h1", **flags)
    h2 = start_daemon(data_dir=tmp_path / "h2", **flags)
    a, b = make_refs(4, salt="salt-a"), make_refs(4, salt="salt-b")
    with registered_client(h1.endpoint) as c1, registered_client(h2.endpoint, "e2") as c2:
        wait_remote_ready(c1)
        wait_remote_ready(c2)
        register(c1, "salt-a", "salt-b")
        put(c2, a + b)  # host 2 stored them (write-through to the cluster); host 1 never did
        c2.flush()
        assert where(c1, a + b, remote=True) == [Where.REMOTE] * 8
        got = purge(h1.endpoint, "salt-a")
        assert got["removed"]["remote"] == 4, got
        assert where(c1, a, remote=True) == [Where.MISS] * 4
        assert where(c1, b, remote=True) == [Where.REMOTE] * 4


def test_a_disk_quota_holds_across_a_restart(start_daemon, tmp_path: Path) -> None:
    port = free_port()
    flags = {"cpu_bytes": "16KiB", "quotas_disk_blocks": 4, "metrics_port": port}
    a, b = make_refs(10, salt="salt-a"), make_refs(2, salt="salt-b")

    def disk_blocks(salt: str) -> float:
        line = f'asymcache_tenant_blocks{{tenant="{tenant_label(salt)}",tier="disk"}} '
        found = [ln for ln in scrape(port).splitlines() if ln.startswith(line)]
        return float(found[0].split()[-1]) if found else 0.0

    d = start_daemon(**flags)
    with registered_client(d.endpoint) as c:
        register(c, "salt-a", "salt-b")
        put(c, b, durable=True)
        # A's oldest leave the disk for its quota, and the two CPU slots: not stored anywhere
        assert c.put(a[:6], [payload(r) for r in a[:6]], durable=True).stored == \
            [False, False] + [True] * 4
        assert (disk_blocks("salt-a"), disk_blocks("salt-b")) == (4.0, 2.0)
    d.stop()
    d2 = start_daemon(data_dir=tmp_path / "data", **flags)  # counts rebuilt from the disk
    with registered_client(d2.endpoint) as c:
        assert (disk_blocks("salt-a"), disk_blocks("salt-b")) == (4.0, 2.0)
        c.put(a[6:], [payload(r) for r in a[6:]], durable=True)
        assert (disk_blocks("salt-a"), disk_blocks("salt-b")) == (4.0, 2.0)
        assert where(c, a[6:]) == [Where.DISK] * 2 + [Where.CPU] * 2  # the newest kept
        assert Where.MISS not in where(c, b)  # the other tenant lost nothing
