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
