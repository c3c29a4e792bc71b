"""Step ``kernel-tests``: the kernel tests compiled on CUDA, then a 16-bit grid.

1. ``pytest`` with ``ASYMCACHE_TEST_CUDA=1`` (real Triton, no interpreter) on every kernel test
   that runs a Triton kernel or a 16-bit dtype (``-k "triton or half or bfloat16 or float16"``:
   the CI selection of segment patterns, head dims 64/80/96/128, block sizes 16/64, GQA 1/4/8,
   decode splits, merge, ``write_kv``, and the float16 and bfloat16 case), plus
   ``tests/engine/test_pinned.py`` (a real ``cudaHostRegister`` of a slab). Results from
   JUnit XML (counts, names of failures), or from the ``-v`` lines when pytest was stopped.
2. ``ops/gpu/kernel_grid.py``: bfloat16 and float16 at Llama-3-8B heads and two other shapes,
   prefill with holes and split decode, against the float64 reference.

In the CPU rehearsal: the pinned tests, and one small float16 case of the grid in the Triton
interpreter (which cannot ``tl.dot`` bfloat16).
"""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from asymcache.ops.gpu.context import StepContext, python_module, run_bounded
from asymcache.ops.gpu.kernel_grid import grid, run_case
from asymcache.ops.gpu.results import Goal, StepRecord
from asymcache.ops.gpu.wheels import ROOT

GPU_SELECTION = "triton or half or bfloat16 or float16 or test_pinned"
GRID_RESERVE_S = 15.0  # kept for the grid when pytest runs


def run(rec: StepRecord, ctx: StepContext) -> None:
    _pytest(rec, ctx)
    rec.save(ctx.out)
    _grid(rec, ctx)
    f = rec.figures
    passed = f.get("tests_passed", 0) + f.get("grid_passed", 0)
    total = passed + f.get("tests_failed", 0) + f.get("grid_failed", 0)
    rec.goal(Goal("kernel_tests_pass", "kernel tests + 16-bit grid passing (share)", 1.0,
                  value=passed / total if total else None, unit="%", device=ctx.device))
    if f.get("tests_failed") or f.get("grid_failed"):
        rec.status = "failed"
        rec.error = "failing: " + ", ".join(f.get("failures", []) + f.get("grid_failures", []))


def _pytest(rec: StepRecord, ctx: StepContext) -> None:
    xml = ctx.out / "kernel-tests.xml"
    xml.unlink(missing_ok=True)
    env = dict(os.environ)
    if ctx.gpu:
        env["ASYMCACHE_TEST_CUDA"] = "1"
        env.pop("TRITON_INTERPRET", None)
    else:
        env.pop("ASYMCACHE_TEST_CUDA", None)
        env["TRITON_INTERPRET"] = "1"
        rec.skip("compiled_triton", "needs CUDA (the rehearsal runs the pinned tests only; "
                 "its grid case runs Triton in the interpreter)")
    paths = ["tests/kernels", "tests/engine/test_pinned.py"] if ctx.gpu else \
        ["tests/engine/test_pinned.py"]
    cmd = python_module("pytest", "-v", "-p", "no:cacheprovider", "--timeout", "120",
                        "-k", GPU_SELECTION, f"--junitxml={xml}", *paths)
    t0 = time.monotonic()
    log = ctx.out / "kernel-tests-pytest.log"
    code = run_bounded(cmd, ctx.left() - GRID_RESERVE_S, log, env=env, cwd=ROOT)
    rec.figures.update(pytest_exit=code, pytest_s=time.monotonic() - t0,
                       **_junit(xml) if xml.is_file() else _verbose_log(log))
    if code is None:
        rec.figures.setdefault("failures", []).append("pytest stopped at the step's bound")
        rec.figures["tests_failed"] = rec.figures.get("tests_failed", 0) + 1
    ctx.log(f"pytest: {rec.figures.get('tests_passed', 0)} passed, "
            f"{rec.figures.get('tests_failed', 0)} failed, "
            f"{rec.figures.get('tests_skipped', 0)} skipped (exit {code})")


def _junit(path: Path) -> dict:
    """Counts and failing test names from pytest's JUnit XML."""
    cases = ET.parse(path).getroot().iter("testcase")
    passed, skipped, failures = 0, 0, []
    for case in cases:
        outcome = {child.tag for child in case}
        if outcome & {"failure", "error"}:
            failures.append(f"{case.get('classname', '')}::{case.get('name', '')}")
        elif "skipped" in outcome:
            skipped += 1
        else:
            passed += 1
    return {"tests_passed": passed, "tests_failed": len(failures), "tests_skipped": skipped,
            "failures": failures}


def _verbose_log(path: Path) -> dict:
    """Counts and failures from ``pytest -v`` lines (``path::test PASSED``), for a run stopped
    before it wrote its XML."""
    counts = {"PASSED": 0, "FAILED": 0, "ERROR": 0, "SKIPPED": 0}
    failures = []
    text = path.read_text(errors="replace") if path.is_file() else ""
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and "::" in words[0] and words[1] in counts:
            counts[words[1]] += 1
            if words[1] in ("FAILED", "ERROR"):
                failures.append(words[0])
    return {"tests_passed": counts["PASSED"], "tests_failed": len(failures),
            "tests_skipped": counts["SKIPPED"], "failures": failures}


def _grid(rec: StepRecord, ctx: StepContext) -> None:
    if ctx.gpu:
        cases = grid()
    else:
        cases = grid(("float16",), ((32, 2, 2, 16),), small=True)[:1]
        rec.skip("grid_bfloat16", "the Triton interpreter cannot tl.dot bfloat16; needs CUDA")
        rec.skip("grid_llama_shapes", "needs CUDA (the rehearsal runs one small float16 case)")
    results = []
    for case in cases:
        if ctx.left() < 3:
            rec.skip(f"grid[{case.name}]", "no time left in the step's bound")
            continue
        results.append(run_case(case, ctx.device))
        ctx.log(f"grid {results[-1]['case']}: o err {results[-1]['o_err']:.2e}, lse err "
                f"{results[-1]['lse_err']:.2e} (tol {results[-1]['tol']:g})")
    rec.figures.update(grid=results, grid_passed=sum(r["ok"] for r in results),
                       grid_failed=sum(not r["ok"] for r in results),
                       grid_failures=[r["case"] for r in results if not r["ok"]])
