"""Sessions in traces: the Mooncake superset, ``sessions=chain``, dump/load, generator signals."""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from pathlib import Path

import pytest

from asymcache.ops.sim.formats.jsonl_out import dump_mooncake
from asymcache.ops.sim.trace import Request, Trace, load_trace


def _write(tmp_path: Path, records: list[dict[str, object]], name: str = "t.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _rec(ts: float, ids: list[int], block: int = 512, **extra: object) -> dict[str, object]:
    return {"timestamp": ts, "input_length": len(ids) * block + 1, "output_length": 9,
            "hash_ids": ids, **extra}


def _at(path: Path, line: int) -> str:
    """The pattern of an error's ``file:line: `` prefix."""
    return re.escape(f"{path}:{line}: ")


def test_a_plain_mooncake_line_keeps_every_new_field_at_its_default(tmp_path: Path) -> None:
    trace = load_trace(str(_write(tmp_path, [_rec(1500, [4, 5])])))
    assert trace.block_tokens == 512
    assert trace.requests == [Request(1.5, (4, 5), 1025, 9)]
    req = trace.requests[0]
    assert (req.session, req.session_end, req.retention_s, req.pin_ttl_s, req.stop) == \
        (-1, False, 0.0, 0.0, "")


def test_every_superset_field_is_read_and_unknown_keys_are_ignored(tmp_path: Path) -> None:
    path = _write(tmp_path, [
        _rec(0, [1, 2, 3], 256, block_size=256, session_id="conv-a", stop="tool_use",
             pin_ttl_s=30, retention_s=300.5, note="ignored"),
        _rec(250.5, [1, 2, 3, 4], 256, block_size=256, session_id="conv-a", session_end=True,
             stop="end_turn"),
    ])
    trace = load_trace(str(path))
    assert trace.block_tokens == 256
    assert trace.requests == [
        Request(0.0, (1, 2, 3), 769, 9, pin_ttl_s=30.0, session=0, retention_s=300.5,
                stop="tool_use"),
        Request(0.2505, (1, 2, 3, 4), 1025, 9, session=0, session_end=True, stop="end_turn"),
    ]


def test_block_size_decides_which_ids_are_full_blocks(tmp_path: Path) -> None:
    rec = {"timestamp": 0, "input_length": 300, "output_length": 1, "hash_ids": [7, 8, 9],
           "block_size": 128}
    assert load_trace(str(_write(tmp_path, [rec]))).requests[0].blocks == (7, 8)


def test_session_ids_are_numbered_in_order_of_first_appearance(tmp_path: Path) -> None:
    ids: list[object] = ["b", 7, "b", "7", 7, None, "a"]
    records = [_rec(i, [i]) if sid is None else _rec(i, [i], session_id=sid)
               for i, sid in enumerate(ids)]
    trace = load_trace(str(_write(tmp_path, records)))
    assert [r.session for r in trace] == [0, 1, 0, 2, 1, -1, 3]


@pytest.mark.parametrize(("field", "value"), [
    ("block_size", 0), ("block_size", "512"), ("block_size", True), ("block_size", 1.5),
    ("session_id", 1.5), ("session_id", [1]), ("session_id", True),
    ("session_end", "yes"), ("session_end", 1),
    ("retention_s", -1), ("retention_s", "3"), ("retention_s", True), ("retention_s", None),
    ("pin_ttl_s", -0.5), ("pin_ttl_s", "30"),
    ("stop", 3), ("stop", None),
    ("timestamp", "soon"), ("output_length", -1), ("output_length", 2.5),
    ("input_length", 0), ("hash_ids", [1, "x"]),
])
def test_a_bad_field_value_names_the_file_line_and_field(tmp_path: Path, field: str,
                                                         value: object) -> None:
    bad = {**_rec(1, [2]), field: value}
    path = _write(tmp_path, [_rec(0, [1]), bad])
    with pytest.raises(ValueError, match=rf"{_at(path, 2)}{field} must be"):
        load_trace(str(path))


def test_a_block_size_that_differs_between_lines_is_an_error(tmp_path: Path) -> None:
    at_256 = [_rec(i, [1], 256, block_size=256) for i in range(2)]
    path = _write(tmp_path, [*at_256, _rec(2, [1, 2])])  # no block_size: 512
    with pytest.raises(ValueError, match=rf"{_at(path, 3)}block_size 512 differs from 256 on"):
        load_trace(str(path))


def test_the_mooncake_loader_refuses_unknown_options(tmp_path: Path) -> None:
    path = str(_write(tmp_path, [_rec(0, [1])]))
    with pytest.raises(ValueError, match="unknown option 'seed'"):
        load_trace(path, options="seed=1")
    with pytest.raises(ValueError, match="sessions='yes'"):
        load_trace(path, options="sessions=yes")


CHAIN = [  # full-block lists, in arrival order, and the session each must get
    ([1, 2, 3], 0),
    ([1], 1),  # no earlier list is a prefix of [1]: a new session (all known: no anchor)
    ([1, 2, 3, 4], 0),  # [1, 2, 3] is a prefix ([1] anchors nothing): continues it
    ([1, 5], 2),  # [1] added no new block, so it cannot be continued: a new session
    ([1, 2, 3, 6], 0),  # branches off [1, 2, 3]; [1, 2, 3, 4] is not a prefix
    ([], 3),  # no full block: nothing to continue
    ([1, 5, 7], 2),
    ([9, 1], 4),
    ([1, 2, 3, 4, 8], 0),  # the longest anchored prefix wins
    ([1, 2], 5),  # [1, 2, 3] is longer than the request and [1] anchors nothing
    ([1, 2, 3], 0),  # the same list as the first request: continues it
]


def test_sessions_chain_follows_the_longest_earlier_full_prefix(tmp_path: Path) -> None:
    path = _write(tmp_path, [_rec(i, ids) for i, (ids, _) in enumerate(CHAIN)])
    trace = load_trace(str(path), options="sessions=chain")
    assert [r.blocks for r in trace] == [tuple(ids) for ids, _ in CHAIN]
    assert [r.session for r in trace] == [sid for _, sid in CHAIN]
    assert not any(r.session_end for r in trace)  # an end would be knowledge of the future


def test_sessions_chain_on_a_trace_with_session_ids_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, [_rec(0, [1]), _rec(1, [1, 2], session_id="x")])
    with pytest.raises(ValueError, match=rf"{_at(path, 2)}option sessions=chain .* session_id"):
        load_trace(str(path), options="sessions=chain")


def test_sessions_chain_keeps_every_other_field(tmp_path: Path) -> None:
    path = _write(tmp_path, [_rec(0, [1], stop="tool_use", pin_ttl_s=3, retention_s=4),
                             _rec(5, [1, 2], session_end=True)])
    plain, chained = load_trace(str(path)), load_trace(str(path), options="sessions=chain")
    assert [r.session for r in chained] == [0, 0]
    assert [(r.arrival_s, r.stop, r.pin_ttl_s, r.retention_s, r.session_end) for r in plain] == \
        [(r.arrival_s, r.stop, r.pin_ttl_s, r.retention_s, r.session_end) for r in chained]


@pytest.mark.parametrize(("spec", "time_scale"), [
    ("chat:sessions=60,seed=1", 1.0), ("chat:sessions=60,seed=1,retention_s=12.5", 0.37),
    ("agent:sessions=12,seed=2", 1.0), ("agent:sessions=12,seed=2,max_context=20000", 1.3),
])
def test_a_dumped_trace_loads_back_field_for_field(tmp_path: Path, spec: str,
                                                   time_scale: float) -> None:
    trace = load_trace(spec).scaled(time_scale)
    path = tmp_path / "out.jsonl"
    dump_mooncake(trace, path)
    back = load_trace(str(path))
    assert back.block_tokens == trace.block_tokens == 128
    assert back.requests == trace.requests


def test_a_dumped_line_is_plain_mooncake_when_the_new_fields_are_at_defaults(
        tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    reqs = [Request(1.5, (4, 5), 1030, 7), Request(1.1 * 3, (4,), 600, 1, session=0)]
    dump_mooncake(Trace("m", 512, reqs), path)
    lines = path.read_text().splitlines()
    assert lines[0] == '{"timestamp": 1500, "input_length": 1030, "output_length": 7, ' \
                       '"hash_ids": [4, 5]}'
    assert lines[1].startswith('{"timestamp": 3300.0000000000003, ')  # 1.1 * 3 != 3.3
    assert load_trace(str(path)).requests == reqs


def _by_session(trace: Trace) -> dict[int, list[Request]]:
    sessions: dict[int, list[Request]] = defaultdict(list)
    for req in trace:
        sessions[req.session].append(req)
    return sessions


@pytest.mark.parametrize("spec", ["chat:sessions=200,seed=1", "chat:sessions=50,max_context=3000",
                                  "agent:sessions=30,seed=2",
                                  "agent:sessions=30,seed=2,max_context=20000"])
def test_each_generated_session_ends_exactly_once_on_its_last_request(spec: str) -> None:
    sessions = _by_session(load_trace(spec))
    assert -1 not in sessions
    for reqs in sessions.values():
        assert [r.session_end for r in reqs] == [False] * (len(reqs) - 1) + [True]
        assert reqs[-1].stop == "end_turn" and reqs[-1].pin_ttl_s == 0.0


def test_agent_steps_before_the_last_are_tool_calls_that_pin() -> None:
    for reqs in _by_session(load_trace("agent:sessions=30,seed=2,max_context=20000")).values():
        assert all(r.stop == "tool_use" and r.pin_ttl_s == 30.0 for r in reqs[:-1])


def test_an_agent_session_cut_at_max_context_still_ends() -> None:
    full = load_trace("agent:sessions=30,seed=2")
    cut = load_trace("agent:sessions=30,seed=2,max_context=20000")
    assert len(cut) < len(full)  # some sessions stopped early
    assert sum(r.session_end for r in cut) == 30


def test_every_chat_reply_ends_its_turn() -> None:
    assert {r.stop for r in load_trace("chat:sessions=50,seed=1")} == {"end_turn"}


@pytest.mark.parametrize("name", ["chat", "agent"])
def test_the_retention_option_sets_every_request_and_scales_with_time(name: str) -> None:
    assert {r.retention_s for r in load_trace(f"{name}:sessions=5")} == {0.0}
    trace = load_trace(f"{name}:sessions=5,retention_s=600")
    assert {r.retention_s for r in trace} == {600.0}
    scaled = trace.scaled(0.5)
    assert {r.retention_s for r in scaled} == {300.0}
    assert [(r.session, r.session_end, r.stop) for r in scaled] == \
        [(r.session, r.session_end, r.stop) for r in trace]
    assert [r.pin_ttl_s / 0.5 for r in scaled] == [r.pin_ttl_s for r in trace]


# sha256 of (arrival, blocks, tokens, session, pin TTL) rows, computed before the generators
# learnt session ends: the default outputs must not move (recorded results depend on them).
BEFORE = {
    "chat:sessions=300,seed=1":
        "7e105fa38ca6fa6f3948b20025c15ff9b069f0cc843936f9ec67da42e68e2b50",
    "agent:sessions=40,seed=2":
        "246ce8fb75ad225aeb995fe1ce54edac250c0a9c5ee13f2018362b7f8ab64e4e",
}


@pytest.mark.parametrize("spec", sorted(BEFORE))
def test_default_generator_outputs_are_unchanged(spec: str) -> None:
    rows = [(repr(r.arrival_s), r.blocks, r.input_tokens, r.output_tokens, r.session,
             repr(r.pin_ttl_s)) for r in load_trace(spec)]
    assert hashlib.sha256(repr(rows).encode()).hexdigest() == BEFORE[spec]


def test_agent_tasks_share_one_growing_context_with_human_pauses_between_them() -> None:
    one = load_trace("agent:sessions=6,seed=4")
    assert one.requests == load_trace("agent:sessions=6,seed=4,tasks=1").requests
    trace = load_trace("agent:sessions=6,seed=4,tasks=3,human_s=300,human_max_s=600,"
                       "steps_min=2,steps_max=3,pin_ttl_s=20")
    by: dict[int, list] = {}
    for r in trace:
        by.setdefault(r.session, []).append(r)
    for reqs in by.values():
        assert [r.session_end for r in reqs] == [False] * (len(reqs) - 1) + [True]
        turns = [i for i, r in enumerate(reqs) if r.stop == "end_turn"]
        assert turns[-1] == len(reqs) - 1 and len(turns) == 3  # one answer per task
        for i in turns:
            assert reqs[i].pin_ttl_s == 0.0  # no pin over the human's pause
        for i in turns[:-1]:
            assert reqs[i + 1].arrival_s - reqs[i].arrival_s > 10.0  # the human came back
            assert reqs[i + 1].blocks[:len(reqs[i].blocks)] == reqs[i].blocks  # same context
        assert all(r.pin_ttl_s == 20.0 for i, r in enumerate(reqs) if i not in turns)
