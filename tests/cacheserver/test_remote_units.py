"""The remote tier's daemon-side pieces that need no cluster: the wire, the configuration, the
cost model's remote figures and the index."""

from __future__ import annotations

import msgpack
import pytest

from asymcache.cacheserver.config import RemoteSection, ServerConfig, load_config
from asymcache.cacheserver.index import BlockIndex
from asymcache.cacheserver.policy.cost import CostModel
from asymcache.cacheserver.protocol import (
    PROTOCOL_VERSION,
    BlockRef,
    Lookup,
    LookupReply,
    Where,
    decode_reply,
    decode_request,
)
from asymcache.cacheserver.startup import PolicyFactory, with_remote_link


def test_lookup_without_remote_is_encoded_exactly_as_before() -> None:
    header = msgpack.unpackb(Lookup(keys=[b"k" * 16]).to_wire(3)[0])
    assert header == [PROTOCOL_VERSION, "lookup", 3, {"keys": [b"k" * 16], "lease": True}]
    asked = Lookup(keys=[b"k" * 16], remote=True)
    assert decode_request(asked.to_wire(4)) == (4, asked)
    assert decode_request([msgpack.packb(header)]) == (3, Lookup(keys=[b"k" * 16]))


def test_remote_is_a_location_of_its_own() -> None:
    assert Where.REMOTE == 4 and {w.value for w in Where} == {0, 1, 2, 3, 4}
    rid, reply = decode_reply(LookupReply(where=[4, 0], slots=[-1, -1]).to_wire(9))
    assert rid == 9 and [Where(w) for w in reply.where] == [Where.REMOTE, Where.MISS]


N = "ASYMCACHE_DAEMON_REMOTE__NODES"


@pytest.mark.parametrize(("env", "field"), [
    ({N: "nohost"}, "remote.nodes"),
    ({N: "h:1", "ASYMCACHE_DAEMON_REMOTE__CAPACITY_BYTES": "0"}, "remote.capacity_bytes"),
    ({N: "h:1", "ASYMCACHE_DAEMON_REMOTE__TIMEOUT_S": "0"}, "remote.timeout_s"),
    ({N: "h:1", "ASYMCACHE_DAEMON_REMOTE__PREFIX": "kv{x}"}, "remote.prefix"),
    ({N: "h:1", "ASYMCACHE_DAEMON_REMOTE__TLS_CA_FILE": "/ca"}, "remote.tls"),
    ({"ASYMCACHE_DAEMON_REMOTE__POLICY": "nope"}, "remote.policy"),
])
def test_a_bad_remote_setting_is_named(env: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        load_config(environ=env)


def test_remote_settings_reach_the_tier_and_the_password_stays_out_of_repr() -> None:
    cfg = load_config(environ={N: "a:7000,b:7001", "ASYMCACHE_DAEMON_REMOTE__PASSWORD": "pw-123",
                               "ASYMCACHE_DAEMON_REMOTE__USERNAME": "kv",
                               "ASYMCACHE_DAEMON_REMOTE__TLS": "true",
                               "ASYMCACHE_DAEMON_REMOTE__TTL_S": "3600",
                               "ASYMCACHE_DAEMON_REMOTE__TIMEOUT_S": "0.5"})
    tier = cfg.remote_tier_config()
    assert tier.nodes == ("a:7000", "b:7001") and tier.ttl_ms == 3_600_000
    assert tier.client_kwargs()["password"] == "pw-123" and tier.client_kwargs()["ssl"]
    assert tier.socket_timeout_s == tier.connect_timeout_s == 0.5
    assert tier.block_bytes == cfg.cpu_slot_bytes
    assert "pw-123" not in repr(cfg) and "pw-123" not in repr(tier)
    assert cfg.policy_for("remote") == cfg.policy


def test_configured_remote_figures_price_loads_from_the_start() -> None:
    cfg = ServerConfig(remote=RemoteSection(nodes="h:1", load_bandwidth_bps=1e9,
                                            load_latency_s=2e-3))
    model = PolicyFactory(cfg).cost_model
    assert model is not None
    assert model.load_cost("remote", 10**9) == pytest.approx(1.002)
    assert model.load_cost("cpu", 1) == CostModel.preset(cfg.cost_preset).load_cost("cpu", 1)


def test_measured_remote_figures_reach_every_policy_once() -> None:
    factory = PolicyFactory(ServerConfig(remote=RemoteSection(nodes="h:1")))
    policies = [factory(tier, 100) for tier in ("cpu", "disk", "remote")]
    assert factory.use_remote_figures((1e-4, 3e9), policies)
    for policy in [*policies, factory("gpu", 10)]:
        assert policy.cost_model.load_cost("remote", 3 * 10**9) == pytest.approx(1.0001)
    assert not factory.use_remote_figures((1.05e-4, 3.1e9), policies)  # within 10%: kept
    assert not PolicyFactory(ServerConfig(cost_preset="")).use_remote_figures((1.0, 1.0), [])


def test_with_remote_link_replaces_only_the_remote_figures() -> None:
    base = CostModel.preset("h100-llama3-8b")
    model = with_remote_link(base, 1e-3, 5e8)
    assert [link.tier for link in model.load] == ["cpu", "disk", "remote"]
    assert model.load_cost("disk", 7) == base.load_cost("disk", 7)


def test_a_record_held_only_by_the_remote_level_stays_indexed() -> None:
    index = BlockIndex(4)
    rec = index.ensure(BlockRef(b"k" * 16, b"n" * 16, None, 0), 16, 4096, "layout")
    rec.where = 0b100  # the third level of the chain (the remote tier after CPU and disk)
    assert not index.discard_if_unheld(rec)
    rec.where = 0
    assert index.discard_if_unheld(rec) and b"k" * 16 not in index
