"""Each engine's own cost model at the daemon (``cacheserver/engine_costs.py``): sent with HELLO,
completed with the daemon's tier figures, and the model a block of its namespace is priced with,
in every policy; a bad profile is refused naming the field."""

from __future__ import annotations

import asyncio
import dataclasses

from asymcache.cacheserver import protocol as p
from asymcache.cacheserver.engine_costs import EngineCosts
from asymcache.cacheserver.index import BlockRecord
from asymcache.cacheserver.policy import create_policy
from asymcache.cacheserver.policy.cost import CostModel, TierLink
from tests.cacheserver.daemon_fixtures import LAYOUT, make_refs
from tests.cacheserver.inprocess import Peer, serving

PRESET = CostModel.preset("h100-llama3-8b")
# a CPU engine: attention overtakes the linear cost after ~1,000 positions, loads are slow
CPU = CostModel("cpu", "builtin", 32768, 1e-4, 1e-7, 1e-3, 1e-5,
                (TierLink("cpu", 5e9, 1e-5),))


def test_an_engines_model_is_completed_with_the_daemons_tiers() -> None:
    daemon = dataclasses.replace(PRESET, load=(TierLink("cpu", 1e11, 1e-6),
                                               TierLink("disk", 5e9, 1e-4),
                                               TierLink("remote", 1e9, 1e-3)))
    costs = EngineCosts(daemon, max_namespaces=2)
    got = costs.model_of(CPU.to_dict())
    links = {link.tier: link for link in got.load}
    assert links["cpu"] == TierLink("cpu", 5e9, 1e-5)  # the engine's own figure stays
    assert links["disk"] == TierLink("disk", 5e9, 1e-4)  # the daemon's for what it lacks
    assert links["remote"] == TierLink("remote", 1e9, 1e-3)
    assert got.attn_s_per_token_position == CPU.attn_s_per_token_position


def test_a_block_is_priced_with_its_namespaces_engine_model_in_the_policies() -> None:
    costs = EngineCosts(PRESET, max_namespaces=1)
    policy = create_policy("gdsf", 8, semantics="msa", cost_model=PRESET, tier="cpu")
    policy.set_namespace_costs(costs.by_ns)
    far = 2000 // LAYOUT.block_size  # a block 2,000 tokens in
    cpu_ref, other = make_refs(1, salt="cpu")[0], make_refs(1, salt="other")[0]

    def rec(ref: p.BlockRef) -> BlockRecord:
        return BlockRecord(ref.key, ref.namespace, None, far, LAYOUT.block_size, 4096, "x")

    before = policy.miss_cost(rec(cpu_ref))

    class Session:
        cost_model = costs.model_of(CPU.to_dict())

    costs.note(cpu_ref.namespace, Session())  # type: ignore[arg-type]
    costs.note(other.namespace, Session())  # type: ignore[arg-type]  # past the bound
    assert policy.miss_cost(rec(other)) == before  # priced with the daemon's preset
    assert policy.miss_cost(rec(cpu_ref)) > 10 * before  # a CPU recomputes far slower


def test_hello_carries_the_profile_and_a_bad_one_is_refused(tmp_path) -> None:
    async def run() -> None:
        async with serving(tmp_path, policy="asym") as server:
            peer = Peer(server)
            try:
                hello = dict(engine_id="e1", model_fingerprint="m", layout=LAYOUT.to_dict(),
                             gpu_slots=4)
                bad = {**CPU.to_dict(), "linear_s_per_token": -1}
                peer.send(p.Hello(**hello, cost_profile=bad), 1)
                peer.send(p.Hello(**hello, cost_profile=CPU.to_dict()), 2)
                refs = make_refs(2, salt="t")
                peer.send(p.Commit(tier="gpu", blocks=refs, slots=[0, 1]), 3)
                got = await peer.replies(3)
                assert isinstance(got[1], p.ErrorReply) and "cost_profile" in got[1].message
                assert "linear_s_per_token" in got[1].message
                assert isinstance(got[2], p.HelloReply) and got[3].accepted == [True, True]
                session = server.ctx.sessions.by_engine("e1")
                assert session.cost_model.attn_s_per_token_position == 1e-7
                assert session.gpu_policy.cost_model is session.cost_model
                assert server.ctx.residency.costs.by_ns[refs[0].namespace] is session.cost_model
                assert all(pol.namespace_costs is server.ctx.residency.costs.by_ns
                           for pol in server.ctx.residency.policies.values())
            finally:
                peer.close()

    asyncio.run(run())
