"""What every step of the GPU check records, and the summary table printed last.

A step fills one :class:`StepRecord`: its status, its figures (a JSON object), the goals it
measures (:class:`Goal`: a target, a measured value and the ratio between them) and the parts it
did not run, each named with the reason (``"bench-kernels.sdpa_flash: needs CUDA"``). The record
is written to ``<out>/<step>.json`` after each part (:meth:`StepRecord.save`), so a step stopped
at its time bound still leaves what it measured. The driver writes ``<out>/summary.json`` and
prints :func:`summary_table`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATUSES = ("ok", "failed", "timeout", "skipped", "running")


@dataclass
class Goal:
    """One goal of the issue: ``value`` against ``target``, at least (``at_least``) or at most.

    ``ratio`` is ``value / target`` in both directions (the table shows it as measured); the
    goal is met when the ratio is >= 1 (at least) or <= 1 (at most). Measured on the CPU
    rehearsal, a goal says nothing: ``met`` is None there.
    """

    key: str
    label: str
    target: float
    at_least: bool = True
    value: float | None = None
    unit: str = "x"  # "x": a ratio; "%": a fraction shown in percent
    device: str = "cuda"
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or self.target == 0:
            return None
        return self.value / self.target

    @property
    def met(self) -> bool | None:
        if self.device != "cuda" or self.ratio is None:
            return None
        return self.ratio >= 1.0 if self.at_least else self.ratio <= 1.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "met": self.met}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Goal:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class StepRecord:
    """What one step did; see the module docstring."""

    name: str
    mode: str
    status: str = "running"
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    goals: list[Goal] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    error: str | None = None

    def skip(self, part: str, reason: str) -> None:
        """Name a part this step did not run, and why."""
        self.skipped.append(f"{self.name}.{part}: {reason}")

    def goal(self, goal: Goal) -> Goal:
        self.goals = [g for g in self.goals if g.key != goal.key] + [goal]
        return goal

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "mode": self.mode, "status": self.status,
                "seconds": self.seconds, "figures": self.figures,
                "goals": [g.to_dict() for g in self.goals], "skipped": self.skipped,
                "error": self.error}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepRecord:
        return cls(data["name"], data["mode"], data.get("status", "failed"),
                   float(data.get("seconds", 0.0)), data.get("figures", {}),
                   [Goal.from_dict(g) for g in data.get("goals", [])],
                   list(data.get("skipped", [])), data.get("error"))

    def save(self, out: Path) -> Path:
        """Write ``<out>/<name>.json`` atomically (a reader never sees half a file)."""
        return write_json(out / f"{self.name}.json", self.to_dict())

    @classmethod
    def load(cls, path: Path) -> StepRecord:
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))


def write_json(path: Path, data: Any) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serializable: {type(value).__name__}")


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" if unit == "%" else f"{value:.3g}"


def summary_table(env: dict[str, Any], records: list[StepRecord], mode: str) -> str:
    """The text printed last: the machine, each step's status and time, each goal's ratio,
    and every part not run."""
    what = "CPU rehearsal: no figure here is a measurement" if mode == "cpu" else "measured"
    lines = [f"GPU check summary ({what})",
             f"device {env.get('device', '?')}; torch {env.get('torch', '?')}, triton "
             f"{env.get('triton', '?')}, CUDA {env.get('cuda', '?')}, Python "
             f"{env.get('python', '?')}", "",
             f"{'step':<16}{'status':<10}{'seconds':>9}  note"]
    for r in records:
        note = (r.error or "").splitlines()[0][:70] if r.error else ""
        lines.append(f"{r.name:<16}{r.status:<10}{r.seconds:>9.1f}  {note}")
    lines += ["", f"{'goal':<52}{'target':>10}{'measured':>11}{'ratio':>8}  met"]
    for r in records:
        for g in r.goals:
            target = ("\u2265 " if g.at_least else "\u2264 ") + _fmt(g.target, g.unit)
            met = {True: "yes", False: "NO", None: "-"}[g.met]
            if g.device != "cuda":
                met = "- (cpu)"
            ratio = "-" if g.ratio is None else f"{g.ratio:.2f}"
            lines.append(f"{g.label[:51]:<52}{target:>10}{_fmt(g.value, g.unit):>11}"
                         f"{ratio:>8}  {met}" + (f"  ({g.note})" if g.note else ""))
    skipped = [s for r in records for s in r.skipped]
    if skipped:
        lines += ["", "not run (named):"] + [f"  {s}" for s in skipped]
    return "\n".join(lines)
