"""``asymcache bench wire``, short: a few thousand hostile messages beside two good clients
get exactly the answers their catalogue says, and the daemon keeps serving everyone."""

from __future__ import annotations

import random

from asymcache.cacheserver import protocol as p
from asymcache.ops.bench import _hostile as h
from asymcache.ops.bench import _hostile_mix as mix
from asymcache.ops.bench import _wire_senders as ws
from asymcache.ops.bench.wire import run_wire


def test_3000_hostile_messages_get_their_expected_answers_and_good_clients_are_served() -> None:
    res = run_wire(3000, seed=7, max_seconds=120, say=lambda line: None)
    assert res["unexpected"] == 0, res["unexpected_examples"]
    assert res["answered"] == res["messages"] == 3000
    assert res["good_failures"] == 0 and res["good_requests"] > 0, res["good_errors"]
    assert set(res["categories"]) == set(mix.CATEGORIES)  # every category exercised
    assert all(c["sent"] > 0 for c in res["categories"].values())
    checks = res["checks"]
    assert checks["daemon_alive"] and checks["index_exact"] and checks["engines_exact"], checks
    assert all(v for k, v in checks.items() if k.startswith(("b_", "good-"))), checks
    assert res["error_replies"] > 2000 and res["ack_errors"] > 0
    assert res["rss_growth_pct"] < 50  # a sanity bound only: flatness is the full run's


def test_an_answer_off_the_catalogue_is_unexpected() -> None:
    err = h.Expect("error", frozenset({"bad_field"}))
    assert ws.judge(err, p.ErrorReply("ping", "bad_field", "x")) == ("bad_field", True)
    assert ws.judge(err, p.ErrorReply("ping", "internal", "x")) == ("internal", False)
    assert ws.judge(err, p.ReleaseReply(released=0)) == ("ok", False)
    assert ws.judge(err, None) == ("none", False)
    zero = h.Expect("ok", check=lambda r: isinstance(r, p.ReleaseReply) and r.released == 0)
    assert ws.judge(zero, p.ReleaseReply(released=1)) == ("ok", False)
    refused = h.Expect("ack_error", frozenset({"not_registered"}))
    assert ws.judge(refused, None, None, acked=True) == ("ack", False)
    assert ws.judge(refused, None, "not_registered", acked=True)[1]


def test_the_mix_is_seeded_and_holds_every_category() -> None:
    refs = h.chain_refs("tenant-b", 36)
    t = h.Targets(refs[:16], list(range(8, 24)), refs[16:32], list(range(16)), refs[32:],
                  [0, 1, 2, 3], [r.key for r in h.chain_refs("g", 8)], 256, 16 << 10,
                  8 << 10, 64 << 10)
    first, again = mix.generate(500, 3, t), mix.generate(500, 3, t)
    assert [n for n, _ in first] == [n for n, _ in again]
    assert {n for n, _ in first} == set(mix.CATEGORIES)
    rng = random.Random(0)
    for _, build in first:
        sender, frames, reply_rid, expect = build(rng, t, 9)
        assert sender in ("anon", "engine_a", "fresh") and frames and reply_rid in (0, 9)
        assert expect.kind != "error" or expect.codes


def test_process_figures_of_an_exiting_process_raise_instead_of_missing_a_field() -> None:
    # a zombie (exited, not yet reaped) has no VmRSS: the soak monitor's sampling thread died
    # on the KeyError once, while the daemon it watched was being killed
    import os
    import subprocess
    import sys
    import time

    import pytest

    from asymcache.ops.bench.wire import proc_figures

    live = proc_figures(os.getpid())
    assert live["rss_bytes"] > 0 and live["threads"] >= 1 and live["fds"] > 0
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # exited, not reaped: a zombie
        with open(f"/proc/{child.pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.02)
    try:
        with pytest.raises(ProcessLookupError, match="exiting"):
            proc_figures(child.pid)
    finally:
        child.wait()
