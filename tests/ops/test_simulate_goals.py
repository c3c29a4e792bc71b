"""``python -m asymcache.ops.sim.goals``: goal tables computed from simulator JSON rows."""

from __future__ import annotations

import json

import pytest

from asymcache.ops.sim.goals import (
    goal1_table,
    goal2_table,
    main,
    others_table,
    pivot_table,
    select_runs,
)


def _row(policy: str, sem: str, ttft: float, gap: float | None, gpu: int = 10) -> dict:
    return {"trace": "t", "setup": "gpu", "gpu_blocks": gpu, "cpu_blocks": 0, "disk_blocks": 0,
            "gpu_frac": gpu / 100, "policy": policy, "semantics": sem, "ttft_mean_s": ttft,
            "gpu_hit_ratio": 0.5, "gap_closed": gap}


ROWS = [_row("lru_tail", "prefix", 1.0, 0.0), _row("lru_tail", "msa", 1.0, 0.0),
        _row("asym", "prefix", 0.9, 0.2), _row("asym", "msa", 0.7, 0.6),
        _row("lru", "prefix", 1.1, -0.2), _row("lru", "msa", 0.6, 0.8),
        _row("belady", "msa", 0.5, 1.0)]


def test_goal1_reports_the_gap_asym_closes_with_msa_and_whether_it_is_half() -> None:
    lines = goal1_table(ROWS).splitlines()
    assert lines[2] == "| t | gpu | 10.0% | 1.0000 | 0.7000 | 0.5000 | 0.600 | yes |"
    assert len(lines) == 3


def test_goal2_counts_runs_per_semantics_and_the_gains_over_lru_tail() -> None:
    lines = goal2_table(ROWS).splitlines()
    assert lines[2] == "| t | gpu | 2 | 2 | 0 | 0 | +30.00% | +10.00% |"


def test_other_policies_count_losses_to_lru_tail_and_wins_over_asym() -> None:
    lines = others_table(ROWS, ["lru"]).splitlines()
    assert lines[2] == "| lru | 2 | 1 | 1 | 10.0% |"


def test_pivot_puts_hit_ratio_and_gap_closed_side_by_side_and_names_bad_items() -> None:
    lines = pivot_table(ROWS, ["asym/msa", "dead_first/msa"]).splitlines()
    assert lines[2] == "| t | 10.0% | 0.500 / 0.600 |  |"
    with pytest.raises(ValueError, match="POLICY/SEMANTICS"):
        pivot_table(ROWS, ["asym"])


def test_main_reads_json_files_and_rejects_a_file_that_is_not_a_list(tmp_path, capsys) -> None:
    good, bad = tmp_path / "rows.json", tmp_path / "bad.json"
    good.write_text(json.dumps(ROWS))
    bad.write_text("{}")
    assert main([str(good)]) == 0
    assert "| t | gpu | 10.0% | 1.0000 | 0.7000 | 0.5000 | 0.600 | yes |" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"bad\.json"):
        main([str(bad)])


def test_pivot_with_plot_writes_a_png_of_the_chosen_runs_only(tmp_path, capsys) -> None:
    good, png = tmp_path / "rows.json", tmp_path / "p.png"
    good.write_text(json.dumps(ROWS))
    assert main([str(good), "--pivot", "belady/msa,asym/msa", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r["policy"] for r in select_runs(ROWS, ["belady/msa", "asym/msa"])] == [
        "belady", "asym"]
