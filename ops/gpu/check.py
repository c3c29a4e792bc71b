"""``python -m asymcache.ops.gpu.check``: the GPU check's steps, each in a process of its own
under its time bound, then the summary table, printed last (docs/gpu.md).

    python -m asymcache.ops.gpu.check --out DIR [--mode gpu|cpu] [--steps env,pinned]
                                      [--budget-s 270]

``ops/gpu/check.sh`` installs the working tree first and then runs this. Steps run in order
within one budget: each gets its own bound or what is left of the budget, whichever is less, and
one that runs past it is killed with its children (its JSON keeps what it measured so far). A
step that crashes, fails or times out does not stop the next. Files in ``--out``: one
``<step>.json`` and ``<step>.log`` per step, ``summary.json``, and what steps add
(``kernel-tests.xml``, ``bench-kernels-raw.json``, ...). Exit status 0 when every step that ran
finished, 1 otherwise; a goal missed is a finding, not a failure.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from asymcache.ops.gpu.context import MODES, StepContext, python_module, run_bounded
from asymcache.ops.gpu.results import StepRecord, summary_table, write_json


@dataclass(frozen=True)
class Step:
    name: str
    module: str
    bound_s: float
    what: str


STEPS = (
    Step("env", "asymcache.ops.gpu.step_env", 20, "device, driver and software versions"),
    Step("pinned", "asymcache.ops.gpu.step_pinned", 30,
         "CPU-tier slab registered with CUDA: copy bandwidth against the host link"),
    Step("kernel-tests", "asymcache.ops.gpu.step_kernel_tests", 75,
         "kernel tests compiled on CUDA, and a float16/bfloat16 grid at Llama-3-8B heads"),
    Step("bench-kernels", "asymcache.ops.gpu.step_bench_kernels", 50,
         "asymcache bench kernels against SDPA flash and the measured copy bandwidth"),
    Step("engine", "asymcache.ops.gpu.step_engine", 80,
         "engine vs transformers on a Llama-3-8B-shaped bf16 model: speed and greedy tokens"),
    Step("e2e", "asymcache.ops.gpu.step_e2e", 70,
         "daemon + engine on the GPU: configurations 1, 3, 4 and the bound on chat, longctx"),
)
DEFAULT_BUDGET_S = 270.0  # steps; with the install, under five minutes on an H100
MIN_STEP_S = 8.0  # a step is not started with less than this left
GRACE_S = 10.0  # past its bound a step is killed; until then it may finish writing


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.run_step:
        return run_step(args.run_step, out, args.mode, args.bound_s)
    try:
        steps = _select(args.steps)
    except ValueError as exc:
        print(f"asymcache gpu check: {exc}", file=sys.stderr)
        return 2
    records = run_all(steps, out, args.mode, args.budget_s)
    return report(records, out, args.mode)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m asymcache.ops.gpu.check",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for JSON, logs and the summary")
    parser.add_argument("--mode", choices=MODES, default="gpu",
                        help="gpu: the check on CUDA; cpu: the rehearsal on this CPU")
    parser.add_argument("--steps", default=None,
                        help=f"comma-separated subset of {','.join(s.name for s in STEPS)}")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help=f"seconds for all steps together (default {DEFAULT_BUDGET_S:g})")
    parser.add_argument("--run-step", help=argparse.SUPPRESS)
    parser.add_argument("--bound-s", type=float, default=60.0, help=argparse.SUPPRESS)
    return parser


def _select(names: str | None) -> list[Step]:
    if not names:
        return list(STEPS)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {s.name: s for s in STEPS}
    bad = [n for n in wanted if n not in known]
    if bad:
        raise ValueError(f"unknown step(s) {bad}; known: {list(known)}")
    return [s for s in STEPS if s.name in wanted]


def step_env(mode: str) -> dict[str, str]:
    """The environment every step runs with: no network, unbuffered output, and compiled
    Triton on the GPU, the interpreter in the rehearsal."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1",
               TOKENIZERS_PARALLELISM="false")
    if mode == "gpu":
        env.pop("TRITON_INTERPRET", None)
    else:  # Triton kernels run in the interpreter (read when a kernel module is imported)
        env["TRITON_INTERPRET"] = "1"
    return env


def run_all(steps: list[Step], out: Path, mode: str, budget_s: float) -> list[StepRecord]:
    """Every step in order within ``budget_s`` (see the module docstring)."""
    start, records = time.monotonic(), []
    for step in steps:
        left = budget_s - (time.monotonic() - start)
        if left < MIN_STEP_S:
            rec = StepRecord(step.name, mode, "skipped")
            rec.skip("all", f"not started: {left:.0f} s left of the {budget_s:.0f} s budget")
            rec.save(out)
        else:
            rec = _run_step_process(step, out, mode, min(step.bound_s, left))
        records.append(rec)
        print(f"[check] {step.name}: {rec.status} in {rec.seconds:.1f} s "
              f"({out / (step.name + '.log')})", flush=True)
    return records


def _run_step_process(step: Step, out: Path, mode: str, bound_s: float) -> StepRecord:
    path, log = out / f"{step.name}.json", out / f"{step.name}.log"
    path.unlink(missing_ok=True)
    log.unlink(missing_ok=True)
    t0 = time.monotonic()
    cmd = python_module("asymcache.ops.gpu.check", "--run-step", step.name, "--out", str(out),
                        "--mode", mode, "--bound-s", f"{bound_s:.1f}")
    code = run_bounded(cmd, bound_s + GRACE_S, log, env=step_env(mode), own_group=True)
    rec = StepRecord.load(path) if path.is_file() else StepRecord(step.name, mode, "failed")
    if code is None:
        rec.status = "timeout"
        rec.error = f"killed at its bound of {bound_s:.0f} s (+{GRACE_S:.0f} s grace)"
    elif code != 0 and rec.status in ("ok", "running"):
        rec.status = "failed"
    if rec.status == "failed" and not rec.error:
        rec.error = f"exit status {code}; see {log.name}"
    rec.seconds = time.monotonic() - t0
    rec.save(out)
    return rec


def run_step(name: str, out: Path, mode: str, bound_s: float) -> int:
    """Run one step in this process (the driver's child); writes ``<out>/<name>.json``."""
    step = {s.name: s for s in STEPS}[name]
    # Stopped at its bound (SIGTERM from the driver): unwind, so that finally blocks stop
    # daemons and unlink shared memory; the record keeps what was measured.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rec = StepRecord(name, mode)
    ctx = StepContext(out, mode, time.monotonic() + bound_s)
    ctx.log(f"step {name} ({step.what}); bound {bound_s:.0f} s, mode {mode}")
    t0 = time.monotonic()
    try:
        importlib.import_module(step.module).run(rec, ctx)
        if rec.status == "running":
            rec.status = "ok"
    except Exception:
        rec.status, rec.error = "failed", traceback.format_exc()
        print(rec.error, file=sys.stderr, flush=True)
    finally:
        rec.seconds = time.monotonic() - t0
        rec.save(out)
    return 0 if rec.status in ("ok", "skipped") else 1


def report(records: list[StepRecord], out: Path, mode: str) -> int:
    """Write ``summary.json`` and print the failures' log tails, then the summary table."""
    env = next((r.figures for r in records if r.name == "env"), {})
    install = _install_record(out, mode)
    if install is not None:
        records = [install, *records]
    for rec in records:
        if rec.status in ("failed", "timeout"):
            print(f"\n--- {rec.name} ({rec.status}): last lines of {rec.name}.log ---")
            print(_tail(out / f"{rec.name}.log", 15))
    summary = {"mode": mode, "env": env, "steps": [r.to_dict() for r in records],
               "goals": [g.to_dict() for r in records for g in r.goals],
               "not_run": [s for r in records for s in r.skipped]}
    write_json(out / "summary.json", summary)
    print()
    print(summary_table(env, records, mode))
    print(f"\nwrote {out / 'summary.json'} and one JSON and log per step in {out}", flush=True)
    return 0 if all(r.status in ("ok", "skipped") for r in records) else 1


def _install_record(out: Path, mode: str) -> StepRecord | None:
    """``install.json`` (written by check.sh) as a record; in the rehearsal, named as not run."""
    path = out / "install.json"
    if path.is_file():
        return StepRecord.load(path)
    if mode == "cpu":
        rec = StepRecord("install", mode, "skipped")
        rec.skip("pip_install", "the CPU rehearsal runs in the development virtualenv")
        return rec
    return None


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path.name} not found)"


if __name__ == "__main__":
    sys.exit(main())
