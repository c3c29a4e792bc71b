"""Trace formats: the real files parse, generators are seeded, bad input names its fault."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asymcache.ops.sim.trace import load_trace, trace_formats

TRACES = Path("/work/shared/traces")
needs_traces = pytest.mark.skipif(not TRACES.is_dir(), reason="shared traces not present")
EXCERPTS = Path(__file__).parents[1] / "data" / "traces"  # in the repository: always present


def test_a_mooncake_excerpt_keeps_full_blocks_and_shares_equal_hash_ids() -> None:
    path = EXCERPTS / "mooncake_conversation_head200.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    trace = load_trace(str(path))
    assert len(trace) == len(records) == 200
    assert trace.block_tokens == 512
    full = [r["hash_ids"][: r["input_length"] // 512] for r in records]
    assert trace.block_refs == sum(map(len, full)) == 5337  # partial last blocks dropped
    assert trace.unique_blocks == len({h for ids in full for h in ids}) == 5015
    assert [r.input_tokens for r in trace] == [r["input_length"] for r in records]
    # equal hash ids are the same block, different ids different blocks
    ids_of: dict[int, int] = {}
    for req, ids in zip(trace, full, strict=True):
        assert len(req.blocks) == len(ids)
        for block, h in zip(req.blocks, ids, strict=True):
            assert ids_of.setdefault(block, h) == h


def test_an_azure_excerpt_is_synthesised_reproducibly_with_its_lengths() -> None:
    path = EXCERPTS / "azure_conv_head300.csv"
    lengths = [int(row.split(",")[1]) for row in path.read_text().splitlines()[1:]]
    a, b = load_trace(str(path)), load_trace(str(path))
    assert len(a) == 300 and [r.input_tokens for r in a] == lengths
    assert [r.blocks for r in a] == [r.blocks for r in b]
    assert a.unique_blocks < a.block_refs  # follow-ups and system prompts share blocks
    other = load_trace(str(path), options="seed=1")
    assert [r.blocks for r in other] != [r.blocks for r in a]


def test_every_built_in_format_is_registered() -> None:
    load_trace("chat:sessions=1")
    assert {"mooncake", "azure", "chat", "agent"} <= set(trace_formats())


@needs_traces
def test_the_mooncake_conversation_trace_keeps_full_blocks_only() -> None:
    trace = load_trace(str(TRACES / "mooncake_fast25/conversation_trace.jsonl"))
    assert len(trace) == 12031
    assert trace.block_tokens == 512
    assert trace.block_refs == 276491  # 288,500 ids minus the 12,009 partial last blocks
    first = trace.requests[0]
    assert first.input_tokens == 6758 and len(first.blocks) == 6758 // 512


@needs_traces
def test_azure_sessions_are_synthesised_reproducibly_with_shared_prefixes() -> None:
    path = str(TRACES / "azure_llm_2023/AzureLLMInferenceTrace_conv.csv")
    a, b = load_trace(path), load_trace(path)
    assert [r.blocks for r in a] == [r.blocks for r in b]
    assert len(a) == 19366
    assert a.unique_blocks < a.block_refs  # follow-ups and system prompts share blocks
    other = load_trace(path, options="seed=1")
    assert [r.blocks for r in other] != [r.blocks for r in a]
    assert [r.input_tokens for r in other] == [r.input_tokens for r in a]


@pytest.mark.parametrize("spec", ["chat:sessions=30,seed=2", "agent:sessions=5,seed=2"])
def test_generators_are_seeded_and_follow_the_prefix_rule(spec: str) -> None:
    trace = load_trace(spec)
    assert [r.blocks for r in trace] == [r.blocks for r in load_trace(spec)]
    parent_of: dict[int, int | None] = {}
    for req in trace:
        assert req.input_tokens >= len(req.blocks) * trace.block_tokens
        for i, block in enumerate(req.blocks):
            parent = req.blocks[i - 1] if i else None
            assert parent_of.setdefault(block, parent) == parent  # one block, one prefix


def test_agent_steps_ask_for_ttl_pins_except_the_last() -> None:
    trace = load_trace("agent:sessions=3,seed=1,pin_ttl_s=12")
    by_session: dict[int, list[float]] = {}
    for req in trace:
        by_session.setdefault(req.session, []).append(req.pin_ttl_s)
    for pins in by_session.values():
        assert pins[-1] == 0.0 and all(p == 12.0 for p in pins[:-1])


def test_bad_input_is_rejected_with_the_line_or_option_named(tmp_path) -> None:
    bad = tmp_path / "t.jsonl"
    bad.write_text('{"timestamp": 0, "input_length": 600, "output_length": 1, "hash_ids": [1]}\n'
                   '{"timestamp": 1, "input_length": 600}\n')
    with pytest.raises(ValueError, match=r"t\.jsonl:2"):
        load_trace(str(bad))
    with pytest.raises(ValueError, match="sesions"):
        load_trace("chat:sesions=3")
    with pytest.raises(ValueError, match="not a valid int"):
        load_trace("chat:sessions=many")
    with pytest.raises(ValueError, match="neither a file"):
        load_trace("/no/such/file.jsonl")
    csv = tmp_path / "a.csv"
    csv.write_text("when,tokens\n")
    with pytest.raises(ValueError, match="Azure header"):
        load_trace(str(csv))
