"""``asymcache simulate`` end to end: table, JSON rows with the documented keys, a PNG."""

from __future__ import annotations

import json

from asymcache.ops.cli import main

KEYS = {"policy", "semantics", "gpu_frac", "ttft_mean_s", "ttft_p90_s", "gpu_hit_ratio",
        "gap_closed"}


def test_simulate_writes_a_table_json_rows_and_a_plot(tmp_path, capsys) -> None:
    out, png = tmp_path / "rows.json", tmp_path / "ttft.png"
    code = main(["simulate", "--trace", "chat:sessions=30,seed=4", "--policy",
                 "lru_tail,asym,belady", "--semantics", "prefix,msa", "--gpu-frac", "0.05,0.2",
                 "--cpu-frac", "0.3", "--queue", "--json", str(out), "--plot", str(png),
                 "--no-progress"])
    assert code == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 2 * 3 * 2
    assert all(set(r) >= KEYS and "ttft_queue_mean_s" in r for r in rows)
    by = {(r["policy"], r["semantics"], r["gpu_size"]): r for r in rows}
    with_gap = [size for size in ("0.05", "0.2")
                if by[("lru_tail", "prefix", size)]["gap_closed"] is not None]
    assert with_gap, "no GPU size with a gap over 1%: the check below would check nothing"
    for size in with_gap:
        base, bound = by[("lru_tail", "prefix", size)], by[("belady", "msa", size)]
        assert base["gap_closed"] == 0.0 and bound["gap_closed"] == 1.0
    for size in ("0.05", "0.2"):
        base = by[("lru_tail", "prefix", size)]
        assert base["cpu_blocks"] > 0 and "cpu_hit_ratio" in base
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "gap closed" in printed and "block refs/s" in printed


def test_simulate_rejects_unknown_policies_and_missing_sizes(capsys) -> None:
    assert main(["simulate", "--trace", "chat:sessions=2", "--policy", "mru",
                 "--gpu-frac", "0.1", "--no-progress"]) == 2
    assert "mru" in capsys.readouterr().err
    assert main(["simulate", "--trace", "chat:sessions=2", "--no-progress"]) == 2
    assert "--gpu-frac" in capsys.readouterr().err


def test_policy_options_reach_the_policy_and_label_the_row(tmp_path) -> None:
    out, md = tmp_path / "rows.json", tmp_path / "table.md"
    assert main(["simulate", "--trace", "chat:sessions=10", "--policy",
                 "asym:select=false;clock=inflation", "--semantics", "msa", "--gpu-frac", "0.1",
                 "--json", str(out), "--markdown", str(md), "--no-progress"]) == 0
    assert json.loads(out.read_text())[0]["policy"] == "asym:select=false;clock=inflation"
    assert md.read_text().startswith("| setup | gpu | policy |")
    assert main(["simulate", "--trace", "chat:sessions=10", "--policy", "asym:colour=red",
                 "--gpu-frac", "0.1", "--no-progress"]) == 2
    assert main(["simulate", "--trace", "chat:sessions=10", "--policy", "lru:select=false",
                 "--gpu-frac", "0.1", "--no-progress"]) == 2


def test_signals_on_by_default_when_the_trace_carries_them_and_the_trace_can_be_written(
        tmp_path, capsys) -> None:
    trace, on, off = tmp_path / "chat.jsonl", tmp_path / "on.json", tmp_path / "off.json"
    args = ["simulate", "--trace", "chat:sessions=40,seed=2", "--policy", "lru_tail,lru_signals",
            "--semantics", "msa", "--gpu-frac", "0.1", "--no-progress"]
    assert main([*args, "--write-trace", str(trace), "--json", str(on)]) == 0
    assert "client signals on" in capsys.readouterr().out
    assert main([*args, "--signals", "off", "--json", str(off)]) == 0
    rows_on = {r["policy"]: r for r in json.loads(on.read_text())}
    rows_off = {r["policy"]: r for r in json.loads(off.read_text())}
    assert rows_on["lru_signals"]["signals"] is True and rows_off["lru_tail"]["signals"] is False
    # ended sessions' blocks go first: fewer misses than plain LRU; without signals the same
    assert rows_on["lru_signals"]["ttft_mean_s"] < rows_on["lru_tail"]["ttft_mean_s"]
    assert rows_off["lru_signals"]["ttft_mean_s"] == rows_off["lru_tail"]["ttft_mean_s"]
    # the written trace replays to the very same rows (every field round-trips)
    again = tmp_path / "again.json"
    assert main(["simulate", "--trace", str(trace), "--format", "mooncake", "--policy",
                 "lru_tail,lru_signals", "--semantics", "msa", "--gpu-frac", "0.1",
                 "--no-progress", "--json", str(again)]) == 0
    for r in json.loads(again.read_text()):
        assert r["ttft_mean_s"] == rows_on[r["policy"]]["ttft_mean_s"]


def test_the_simulator_runs_without_torch_or_pyzmq() -> None:
    # simulator users (capacity planning on a laptop) need neither; the protocol package's
    # constants, which the block keys use, must not pull in the sockets
    import subprocess
    import sys

    code = ("import sys; from asymcache.ops.sim.cli import simulate; "
            "import asymcache.cacheserver.blocks, asymcache.cacheserver.protocol; "
            "sys.exit(sorted({'torch', 'zmq'} & set(sys.modules)) or 0)")
    done = subprocess.run([sys.executable, "-c", code], timeout=60, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
