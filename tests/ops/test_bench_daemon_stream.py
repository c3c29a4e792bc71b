"""``asymcache bench daemon``'s streamed CPU-tier measure, small: every block of every round
goes through the tier and back byte for byte, each round's figures are kept, and the table
shows the streamed rows with their goal."""

from __future__ import annotations

import argparse

from asymcache.ops.bench import _daemon_tiers as tiers
from asymcache.ops.bench import daemon as bench


def test_a_short_stream_moves_every_block_and_keeps_each_rounds_ratios(start_daemon) -> None:
    d = start_daemon(cpu_bytes="16MiB", cpu_slot_bytes="256KiB", disk_bytes=0)
    got = tiers.cpu_stream(d.endpoint, 1 << 20, 4 << 20, rounds=3)
    assert got["batches"] == 4 and len(got["rounds"]) == 3
    for r in got["rounds"]:
        assert r["write_s"] > 0 and r["read_s"] > 0
        assert r["write_ratio"] == r["memcpy_write_s"] / r["write_s"]
    ratios = sorted(r["write_ratio"] for r in got["rounds"])
    assert got["median_write_ratio"] == ratios[1]
    again = tiers.cpu_stream(d.endpoint, 1 << 20, 4 << 20, rounds=1)  # new blocks each call
    assert len(again["rounds"]) == 1


def test_the_table_reports_streamed_rows_against_their_goal() -> None:
    r = {"batches": 4, "median_write_s": 0.01, "median_read_s": 0.005,
         "median_memcpy_write_s": 0.004, "median_memcpy_read_s": 0.004,
         "median_write_ratio": 0.4, "median_read_ratio": 0.8}
    res = {"cpu_stream": {"1MiB": r}}
    bench._summarise(res)
    assert res["cpu_stream_ratio_vs_memcpy"] == 0.4
    rows = {row[0]: row for row in bench._table(res)}
    write = rows["CPU tier streamed write, 1MiB batches, GB/s"]
    assert write[3:] == ("0.40", ">= 0.80")
    assert write[1] == f"{4 / 1024 / 0.01:.2f}"
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--stream-mib", "8", "--stream-rounds", "3", "--only", "cpu"])
    assert (args.stream_mib, args.stream_rounds, args.only) == (8, 3, ["cpu"])
