"""The tenant book (``cacheserver/tenants.py``) and the ``[quotas]`` settings, without a daemon:
the registry file, its bound, metrics' top N, quota bounds, own-blocks-first eviction on the
tier chain the daemon and the simulator share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgpack
import pytest

from asymcache.cacheserver.blocks import PUBLIC_LABEL, tenant_digest, tenant_label
from asymcache.cacheserver.chain import Level, TierChain
from asymcache.cacheserver.config import QuotaSection, load_config
from asymcache.cacheserver.policy import create_policy
from asymcache.cacheserver.tenants import FILE_NAME, OTHER, UNREGISTERED, TenantBook

NS = [bytes([i]) * 16 for i in range(8)]


def test_tenant_digest_and_label_are_fixed_and_never_show_the_salt() -> None:
    assert tenant_digest("acme").hex() == tenant_digest("acme").hex() != tenant_digest("acm")
    assert len(tenant_digest("")) == 16
    assert tenant_label("") == PUBLIC_LABEL
    assert tenant_label("s3cret") == "salt-" + tenant_digest("s3cret")[:4].hex()
    assert "s3cret" not in tenant_label("s3cret")
    assert tenant_label("s3cret", "acme") == "acme"


def test_the_registry_survives_a_restart_and_a_damaged_file_is_moved_aside(tmp_path) -> None:
    book = TenantBook(QuotaSection(), str(tmp_path))
    assert book.register([(NS[0], tenant_digest("a"), "a"), (NS[1], tenant_digest("b"), "b")],
                         "tiny", "fp") == 2
    assert book.register([(NS[0], tenant_digest("a"), "a")], "tiny", "fp") == 0
    again = TenantBook(QuotaSection(), str(tmp_path))
    assert again.namespaces_of(tenant_digest("a")) == [NS[0]]
    assert again.namespaces_of(tenant_digest("a"), "tiny") == [NS[0]]
    assert again.namespaces_of(tenant_digest("a"), "fp") == [NS[0]]
    assert again.namespaces_of(tenant_digest("a"), "other") == []
    assert again.label(NS[1]) == "b" and again.label(NS[5]) == UNREGISTERED
    raw = (tmp_path / FILE_NAME).read_bytes()
    assert msgpack.unpackb(raw)["format"] == "asymcache-tenants-v1"
    assert b"salt" not in raw  # digests and labels only
    (tmp_path / FILE_NAME).write_bytes(raw[: len(raw) // 2])
    damaged = TenantBook(QuotaSection(), str(tmp_path))
    assert damaged.by_ns == {}
    assert (tmp_path / "tenants.damaged").exists()


def test_the_registry_is_bounded_and_refusals_are_counted(tmp_path) -> None:
    book = TenantBook(QuotaSection(max_namespaces=2), str(tmp_path))
    assert book.register([(ns, tenant_digest(str(i)), str(i)) for i, ns in enumerate(NS[:5])],
                         "", "fp") == 2
    assert len(book.by_ns) == 2 and book.refused == 3


@dataclass
class Block:
    key: int
    namespace: bytes
    parent: int | None = None
    position: int = 0
    n_tokens: int = 16
    n_bytes: int = 1
    where: int = 0
    pinned: bool = False
    pin_until: float | None = None
    busy: int = 0

    def info(self) -> Block:
        return self

    def pin_active(self, now: float) -> bool:
        return self.pinned


class Slots:
    """A store of ``n`` blocks."""

    def __init__(self, n: int) -> None:
        self.n, self.held = n, set()

    def fits(self, block: Block) -> bool:
        return True

    def full(self, block: Block) -> bool:
        return len(self.held) >= self.n

    def put(self, block: Block, data: object) -> bool:
        self.held.add(block.key)
        return True

    def read(self, block: Block) -> object:
        return b"x"

    def drop(self, key: int, block: Block | None) -> None:
        self.held.discard(key)

    def take_failed(self) -> list:
        return []


class Events:
    def __init__(self, book: TenantBook) -> None:
        self.book = book

    def entered(self, level, block) -> None:
        self.book.entered(level.name, block)

    def left(self, level, block) -> None:
        self.book.left(level.name, block)

    def __getattr__(self, name: str):
        return lambda *a, **k: None


def test_a_tenant_at_its_quota_evicts_its_own_lowest_value_block_and_metrics_show_top_n(
        tmp_path) -> None:
    quotas_file = tmp_path / "quotas.toml"
    quotas_file.write_text('[big]\ncpu_blocks = 4\n')
    book = TenantBook(QuotaSection(cpu_blocks=2, tenants_file=str(quotas_file)), None)
    book.register([(NS[0], tenant_digest("s"), "small"), (NS[1], tenant_digest("b"), "big")],
                  "", "fp")
    blocks: dict[int, Block] = {}
    lru = create_policy("lru", 8, tier="cpu")
    chain = TierChain([Level("cpu", Slots(8), lru)], blocks.get, lambda b: None, Events(book),
                      quota=book)
    level = chain.levels[0]

    def place(key: int, ns: bytes, t: float) -> bool:
        blocks[key] = Block(key, ns)
        return chain.place(level, blocks[key], b"x", t, admit=False)

    for i in range(4):  # small: bound 2 (the default); it evicts its own oldest
        assert place(i, NS[0], float(i))
    assert {k for k in level.store.held if blocks[k].namespace == NS[0]} == {2, 3}
    for i in range(10, 16):  # big: its own bound of 4
        assert place(i, NS[1], float(i))
    held = level.store.held
    assert {k for k in held if blocks[k].namespace == NS[1]} == {12, 13, 14, 15}
    assert {k for k in held if blocks[k].namespace == NS[0]} == {2, 3}  # never another's
    assert book.quota_evictions["cpu"] == 4
    lru.pin(12)  # pinned blocks are never quota victims
    lru.pin(13)
    lru.pin(14)
    lru.pin(15)
    assert not place(20, NS[1], 20.0)  # every block of big is pinned: not placed
    assert book.limit("cpu", "big") == 4 and book.limit("cpu", "small") == 2
    assert book.limit("disk", "big") == 0
    assert sorted(book.top(1)) == [("cpu", "big", 4), ("cpu", OTHER, 2)]


def test_bad_quota_settings_fail_at_start_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"quotas\.cpu_blocks"):
        load_config(overrides={"quotas.cpu_blocks": -1})
    with pytest.raises(ValueError, match=r"quotas\.metrics_top"):
        load_config(overrides={"quotas.metrics_top": 0})
    bad = tmp_path / "q.toml"
    bad.write_text("[acme]\ngpu_blocks = 3\n")
    with pytest.raises(ValueError, match=r"quotas\.tenants_file.*gpu_blocks: unknown"):
        load_config(overrides={"quotas.tenants_file": str(bad)})
    with pytest.raises(ValueError, match=r"quotas\.tenants_file"):
        load_config(overrides={"quotas.tenants_file": str(tmp_path / "missing.toml")})
    ok = load_config(overrides={"quotas.disk_blocks": 7})
    assert ok.quotas.limits() == {"*": {"disk": 7}}
