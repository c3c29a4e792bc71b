"""Every command's and every benchmark's ``--help`` renders (argparse %-formats help strings, so
a stray ``%`` in a ``HELP`` or an option's help crashes it).

The modules are discovered the way ``asymcache`` discovers them, and ``--help`` goes through
``asymcache.ops.cli.main`` in this process (the CLI's own code path; no subprocess per module).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from asymcache.ops.cli import discover, main

COMMANDS = sorted(discover("asymcache.ops.commands"))
BENCHMARKS = sorted(discover("asymcache.ops.bench"))


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0, f"asymcache {' '.join(argv)} --help exited {done.value.code}"
    return capsys.readouterr().out


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    out = _help([], capsys)
    assert all(name in out for name in COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_command_help_renders(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = _help([name], capsys)
    assert out.startswith(f"usage: asymcache {name}")


def test_bench_help_lists_every_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    out = _help(["bench"], capsys)
    assert all(name in out for name in BENCHMARKS)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_help_renders(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = _help(["bench", name], capsys)
    assert out.startswith(f"usage: asymcache bench {name}")


def test_the_installed_entry_point_prints_bench_help() -> None:
    run = subprocess.run([sys.executable, "-m", "asymcache.ops.cli", "bench", "--help"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "BENCHMARK" in run.stdout
