"""The end-to-end benchmark's workloads: trace block ids become token ids that share exactly
what the ids share, timelines rescale, and the generators are seeded."""

from __future__ import annotations

import json

import pytest

from asymcache.ops.e2e.sources import SourceSpec, build, sample_conversations
from asymcache.ops.e2e.workload import Mapping, from_trace
from asymcache.ops.sim.trace import Request, Trace, load_trace

B = 16


def _trace() -> Trace:
    """Three requests: two share blocks 0-1, the third shares only block 0."""
    reqs = [Request(0.0, (0, 1, 2), 3 * 32 + 5, 10), Request(2.0, (0, 1, 3), 3 * 32 + 7, 20),
            Request(4.0, (0, 4), 2 * 32 + 1, 30, pin_ttl_s=2.0)]
    return Trace("t", 32, reqs)


def test_equal_block_ids_give_equal_tokens_and_shared_block_keys() -> None:
    w = from_trace("t", _trace(), Mapping(tokens_per_block=32, max_output=25), B)
    a, b, c = (r.prompt for r in w.requests)
    assert a[:64] == b[:64] and a[64:96] != b[64:96] and a[:32] == c[:32] and a[32:64] != c[32:64]
    assert [len(p) for p in (a, b, c)] == [96 + 5, 96 + 7, 64 + 1]
    ids = w.block_ids()  # 16-token engine blocks: two per trace block
    assert ids[0][:4] == ids[1][:4] and ids[0][4:] != ids[1][4:6] and ids[2][:2] == ids[0][:2]
    assert w.unique_blocks() == 6 + 2 + 2
    assert [r.max_tokens for r in w.requests] == [10, 20, 25]  # capped at max_output
    assert all(min(p) >= 6 for p in (a, b, c))  # no special tokens


def test_tokens_per_block_scales_trace_blocks_and_tails() -> None:
    trace = Trace("m", 512, [Request(0.0, (7, 8), 2 * 512 + 256, 160)])
    w = from_trace("m", trace, Mapping(tokens_per_block=32, output_scale=1 / 16), B)
    assert len(w.requests[0].prompt) == 2 * 32 + 16 and w.requests[0].max_tokens == 10


def test_long_prompts_keep_a_shorter_prefix_and_their_fresh_tail() -> None:
    w = from_trace("t", _trace(), Mapping(tokens_per_block=32, max_output=10, max_context=80),
                   B)
    full = from_trace("t", _trace(), Mapping(tokens_per_block=32, max_output=10), B)
    cut, whole = w.requests[0].prompt, full.requests[0].prompt
    assert len(cut) + 10 <= 80 and cut[:64] == whole[:64] and cut[-5:] == whole[-5:]


def test_timeline_rescales_to_a_mean_rate_with_its_pins() -> None:
    w = from_trace("t", _trace(), Mapping(tokens_per_block=32), B)
    assert [r.arrival_s for r in w.requests] == [0.0, 1.0, 2.0] and w.rate == 1.0
    fast = w.at_rate(4.0)
    assert [r.arrival_s for r in fast.requests] == [0.0, 0.25, 0.5]
    assert fast.requests[2].pin_ttl_s == pytest.approx(w.requests[2].pin_ttl_s / 4)
    assert fast.at_rate(1.0).requests == w.requests
    with pytest.raises(ValueError, match="rate must be > 0"):
        w.at_rate(0.0)


def test_sim_trace_of_a_workload_has_its_blocks_and_arrivals() -> None:
    w = build("quick", SourceSpec(requests=12)).at_rate(3.0)
    trace = w.to_trace()
    assert trace.block_tokens == B and len(trace) == len(w) == 12
    assert [list(r.blocks) for r in trace] == w.block_ids()
    assert trace.unique_blocks == w.unique_blocks()
    assert [r.arrival_s for r in trace] == [r.arrival_s for r in w.requests]


@pytest.mark.parametrize("name", ["quick", "chat", "agent", "longctx", "agentlong"])
def test_generated_workloads_are_seeded_and_share_prefixes(name: str) -> None:
    spec = SourceSpec(requests=30)
    w, again = build(name, spec), build(name, spec)
    other = build(name, SourceSpec(requests=30, seed=1))
    assert w.requests == again.requests and w.requests != other.requests
    assert len(w) == 30 and w.unique_blocks() < sum(len(b) for b in w.block_ids())
    assert all(len(r.prompt) + r.max_tokens <= spec.max_context for r in w.requests)
    assert not any(r.pin_ttl_s > 0 for r in w.requests)
    if name == "agent":
        pinned = build(name, SourceSpec(requests=30, agent_pin_ttl_s=8.0))
        assert any(r.pin_ttl_s > 0 for r in pinned.requests)
    if name == "agentlong":  # contexts grow towards the longest the engine serves here
        assert max(len(r.prompt) for r in w.requests) > 0.5 * spec.max_context
    if name == "longctx":  # reuse dominates: most prompt blocks were seen before
        assert w.unique_blocks() < 0.5 * sum(len(b) for b in w.block_ids())
        assert min(len(r.prompt) for r in w.requests) >= 1536


def test_mooncake_sampling_keeps_whole_conversations_in_trace_order(tmp_path) -> None:
    rows = [{"timestamp": i * 1000, "input_length": 3 * 512 + 10, "output_length": 32,
             "hash_ids": [0, 100 + i % 5, 1000 + i, 2000 + i]} for i in range(40)]
    path = tmp_path / "trace.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    trace = load_trace(str(path), "mooncake")
    picked = sample_conversations(trace, 16, seed=3)
    convs = {r.blocks[1] for r in picked}
    assert len(picked) == 16 and len(convs) == 2  # two conversations of 8 requests each
    assert [r.arrival_s for r in picked] == sorted(r.arrival_s for r in picked)
    w = build("mooncake", SourceSpec(requests=16, seed=3, mooncake_path=str(path)))
    assert [len(r.prompt) for r in w.requests] == [3 * 32 + 1] * 16
    for r, src in zip(w.requests, picked, strict=True):  # 512-token block i -> 32 tokens
        same = [x for x, s in zip(w.requests, picked, strict=True) if s.blocks[1] == src.blocks[1]]
        other = [x for x, s in zip(w.requests, picked, strict=True) if s.blocks[1] != src.blocks[1]]
        assert all(x.prompt[:64] == r.prompt[:64] for x in same)
        assert all(x.prompt[:32] == r.prompt[:32] and x.prompt[32:64] != r.prompt[32:64]
                   for x in other)


def test_unknown_workload_names_the_known_ones() -> None:
    known = "known: \\['agent', 'agentlong', 'chat', 'longctx', 'mooncake', 'quick'\\]"
    with pytest.raises(ValueError, match=known):
        build("nope", SourceSpec())


def test_workloads_carry_the_client_signals_and_the_driver_sends_them() -> None:
    from asymcache.ops.e2e.driver import _params

    trace = Trace("s", 32, [Request(0.0, (0,), 40, 5, session=3, retention_s=8.0),
                            Request(2.0, (0, 1), 70, 5, session=3, session_end=True),
                            Request(3.0, (2,), 40, 5)])
    w = from_trace("s", trace, Mapping(tokens_per_block=32, max_output=25), B)
    first, last, _ = w.requests
    assert (first.session, first.session_end, last.session_end) == (3, False, True)
    assert first.retention_s == pytest.approx(8.0 / 1.5)  # in units of the mean gap, as arrivals
    assert w.at_rate(2.0).requests[0].retention_s == pytest.approx(first.retention_s / 2)
    assert [r.session_end for r in w.to_trace().requests] == [False, True, False]
    params = [_params(r, False, w.name) for r in w.requests]
    assert params[0].prompt_cache_key == params[1].prompt_cache_key == "s-session-3"
    assert params[0].prompt_cache_retention == pytest.approx(first.retention_s)
    assert (params[2].prompt_cache_key, params[2].prompt_cache_retention) == (None, 0.0)
    chat = build("chat", SourceSpec(requests=30))
    assert any(r.session_end for r in chat.requests) and all(r.session >= 0 for r in chat.requests)
