"""The GPU check's rehearsal (ops/gpu, docs/gpu.md): its plumbing runs here, on the CPU.

``bash ops/gpu/check.sh --cpu-rehearsal`` runs every step at CPU sizes, once for the module
(about 35 s of CPU; the tests that read it are marked slow): each writes its JSON, the summary
table comes last, and every part that needs CUDA is named as not run. The wheels the GPU machine
needs are checked as a list (requirements.txt against pyproject.toml, and the download command
that fetches them), never downloaded here.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asymcache.ops.gpu import wheels
from asymcache.ops.gpu.check import STEPS
from asymcache.ops.gpu.context import run_bounded
from asymcache.ops.gpu.results import Goal

ROOT = Path(__file__).resolve().parents[2]
NEEDS_CUDA = ("env.cuda_device", "pinned.cuda_host_register", "pinned.host_bandwidth",
              "pinned.copy_compute_overlap", "kernel-tests.compiled_triton",
              "kernel-tests.grid_bfloat16", "bench-kernels.copy_bandwidth",
              "bench-kernels.sdpa_flash", "engine.bf16_llama3_8b_widths", "e2e.cuda_engines")
GOALS = ("pinned_copies_vs_host", "kernel_tests_pass", "prefill_vs_sdpa", "segment_overhead",
         "decode_vs_copy", "greedy_equal", "bf16_noise", "e2e_outputs_identical")


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("gpu-check")
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable)
    run = subprocess.run(["bash", "ops/gpu/check.sh", "--cpu-rehearsal"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=240)
    return out, run


@pytest.mark.slow
def test_the_rehearsal_runs_every_step_and_writes_its_json(rehearsal) -> None:
    out, run = rehearsal
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary["steps"]] == ["install", *(s.name for s in STEPS)]
    for step in STEPS:
        record = json.loads((out / f"{step.name}.json").read_text())
        assert record["status"] == "ok" and record["mode"] == "cpu", record
        assert record["figures"], step.name
    assert (out / "kernel-tests.xml").is_file() and (out / "bench-kernels-raw.json").is_file()


@pytest.mark.slow
def test_the_summary_table_is_printed_last(rehearsal) -> None:
    out, run = rehearsal
    text = run.stdout
    table = text.rindex("GPU check summary")
    assert all(text.index(f"[check] {s.name}: ok") < table for s in STEPS)
    assert "CPU rehearsal: no figure here is a measurement" in text[table:]
    assert text.rstrip().splitlines()[-1].startswith(f"wrote {out / 'summary.json'}")


@pytest.mark.slow
def test_parts_that_need_cuda_are_named_as_not_run(rehearsal) -> None:
    out, run = rehearsal
    not_run = json.loads((out / "summary.json").read_text())["not_run"]
    for part in NEEDS_CUDA:
        assert any(line.startswith(f"{part}:") for line in not_run), part
    printed = run.stdout[run.stdout.rindex("not run (named):"):]
    assert all(part in printed for part in NEEDS_CUDA)
    assert "install.pip_install" in printed


@pytest.mark.slow
def test_every_goal_of_the_issue_has_a_row_that_claims_nothing_on_the_cpu(rehearsal) -> None:
    out, _ = rehearsal
    goals = json.loads((out / "summary.json").read_text())["goals"]
    keys = {g["key"] for g in goals}
    assert set(GOALS) <= keys
    assert any(k.startswith("engine_prefill") for k in keys)
    assert any(k.startswith("engine_decode") for k in keys)
    assert all(g["met"] is None and g["device"] == "cpu" for g in goals)
    e2e = json.loads((out / "e2e.json").read_text())
    assert e2e["figures"]["workloads"]["quick"]["mismatches"] == []


def test_on_a_machine_without_cuda_the_real_check_fails_at_env(tmp_path) -> None:
    run = subprocess.run([sys.executable, "-m", "asymcache.ops.gpu.check", "--out",
                          str(tmp_path), "--steps", "env"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1
    record = json.loads((tmp_path / "env.json").read_text())
    assert record["status"] == "failed" and "no CUDA device" in record["error"]
    assert "env             failed" in run.stdout


def test_a_command_past_its_bound_is_stopped_and_reported(tmp_path) -> None:
    t0 = time.monotonic()
    code = run_bounded(["sleep", "30"], 1.0, tmp_path / "log", own_group=True)
    assert code is None and time.monotonic() - t0 < 15
    assert run_bounded(["true"], 5.0, tmp_path / "log") == 0


def test_a_step_past_its_bound_gets_to_run_its_finally_blocks(tmp_path) -> None:
    # As a step does (check.run_step): SIGTERM unwinds, so daemons are stopped and slabs
    # unlinked before the SIGKILL that follows.
    marker = tmp_path / "cleaned-up"
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))\n"
            "try:\n    time.sleep(30)\n"
            f"finally:\n    open({str(marker)!r}, 'w').close()\n")
    assert run_bounded([sys.executable, "-c", code], 3.0, tmp_path / "log",
                       own_group=True) is None
    assert marker.exists()


def test_the_wheel_list_covers_every_dependency_the_image_lacks() -> None:
    assert wheels.coverage_problems() == []
    carried = wheels.carried()
    for name in wheels.declared():
        assert name in carried or name in wheels.IMAGE_PROVIDES or name in wheels.NOT_CARRIED
    assert "torch" not in carried and "triton" not in carried  # never replace the image's
    for name in ("pyzmq", "lmdb", "fastapi", "uvicorn", "transformers", "pytest", "redis"):
        assert name in carried


def test_a_dependency_nobody_carries_is_named(tmp_path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\ndependencies = ["zstandard>=0.22", "numpy"]\n'
                         '[project.optional-dependencies]\nengine = ["torch>=2"]\n')
    problems = wheels.coverage_problems(pyproject=pyproject)
    assert len(problems) == 1 and problems[0].startswith("zstandard (core dependency")


def test_the_download_command_fetches_cp312_manylinux_wheels_of_the_list() -> None:
    printed = subprocess.run(["bash", "ops/gpu/fetch_wheels.sh", "--print"], cwd=ROOT,
                             capture_output=True, text=True, timeout=30, check=True).stdout
    words = printed.split()
    assert words[1:4] == ["-m", "pip", "download"]
    for flag in ("--only-binary=:all:", "--isolated"):
        assert flag in words
    pairs = set(itertools.pairwise(words))
    for pair in (("--python-version", "3.12"), ("--implementation", "cp"), ("--abi", "cp312"),
                 ("--abi", "abi3"), ("--platform", "manylinux2014_x86_64"),
                 ("--platform", "manylinux_2_28_x86_64"), ("-r", "ops/gpu/requirements.txt"),
                 ("-c", ".ci/constraints.txt"), ("-d", "ops/gpu/wheels")):
        assert pair in pairs, pair


def test_check_dir_names_the_wheels_a_folder_lacks(tmp_path) -> None:
    (tmp_path / "pyzmq-27.3.0-cp312-abi3-manylinux_2_28_x86_64.whl").write_bytes(b"")
    missing = wheels.missing_wheels(tmp_path)
    assert "pyzmq" not in missing and "transformers" in missing and "lmdb" in missing
    run = subprocess.run([sys.executable, "ops/gpu/wheels.py", "check-dir", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert run.returncode == 1 and "fetch_wheels.sh" in run.stderr


def test_the_wheels_folder_is_ignored_by_git() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    run = subprocess.run(["git", "check-ignore", "-q", "ops/gpu/wheels/numpy.whl"], cwd=ROOT,
                         timeout=30)
    assert run.returncode == 0


def test_a_goal_at_most_is_met_below_its_target_and_never_on_the_cpu() -> None:
    overhead = Goal("segment_overhead", "overhead", 0.10, at_least=False, value=0.05)
    assert overhead.ratio == pytest.approx(0.5) and overhead.met is True
    assert Goal("x", "x", 0.7, value=0.6).met is False
    assert Goal("x", "x", 0.7, value=0.9, device="cpu").met is None
    assert Goal("x", "x", 0.7).ratio is None
