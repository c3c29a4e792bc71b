"""What the GPU machine lacks, and whether the carried wheels cover it. Standard library only:
``ops/gpu/check.sh`` runs this file by path before anything is installed.

    python ops/gpu/wheels.py coverage        # requirements.txt covers pyproject.toml
    python ops/gpu/wheels.py check-dir DIR   # DIR holds a wheel for every requirement

The image of a GPU machine (docs/gpu.md) has PyTorch, Triton and their own dependencies and
nothing of this project's. Every dependency ``pyproject.toml`` declares, in any group, must be
carried (``ops/gpu/requirements.txt``), come with the image (:data:`IMAGE_PROVIDES`), or be left
out with a reason (:data:`NOT_CARRIED`): :func:`coverage_problems` says which is none of these.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = Path(__file__).resolve().with_name("requirements.txt")

IMAGE_PROVIDES = {
    "torch": "the image's PyTorch (2.11, CUDA 13): never replaced, pinned at install",
    "triton": "the image's Triton (3.6): never replaced, pinned at install",
}
NOT_CARRIED = {
    "ruff": "lint only; the check lints nothing",
    "httpx": "the HTTP API's tests; the check sends no HTTP request",
    "pyyaml": "the docker tests read YAML; transformers brings it as a dependency anyway",
    "matplotlib": "plots; the check writes JSON and text only",
}

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalize(name: str) -> str:
    """PEP 503 form of a distribution name (``Prometheus_Client`` -> ``prometheus-client``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(line: str) -> str | None:
    """The normalized distribution name of one requirement line (None for blank/comment)."""
    text = line.split("#", 1)[0].strip()
    match = _NAME.match(text)
    return normalize(match.group(1)) if match else None


def carried(path: Path = REQUIREMENTS) -> dict[str, str]:
    """``{name: requirement}`` of the carried requirements file."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name = requirement_name(line)
        if name is not None:
            out[name] = line.split("#", 1)[0].strip()
    return out


def declared(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """``{name: group}`` of every dependency pyproject.toml declares (``core`` or the extra)."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    out = {requirement_name(r): "core" for r in project.get("dependencies", [])}
    for group, reqs in project.get("optional-dependencies", {}).items():
        for r in reqs:
            out.setdefault(requirement_name(r), group)
    return {k: v for k, v in out.items() if k is not None}


def coverage_problems(requirements: Path = REQUIREMENTS,
                      pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """One line per declared dependency neither carried, in the image, nor left out with a
    reason, and per name in two of those lists; empty when covered."""
    have = carried(requirements)
    problems = [f"{name} ({group} dependency in pyproject.toml) is not carried, not in the "
                f"image and not left out: add it to {requirements.name}"
                for name, group in sorted(declared(pyproject).items())
                if name not in have and name not in IMAGE_PROVIDES and name not in NOT_CARRIED]
    for name in sorted(set(have) & (set(IMAGE_PROVIDES) | set(NOT_CARRIED))):
        problems.append(f"{name} is carried and also listed as in the image or left out")
    return problems


def wheel_names(folder: Path) -> dict[str, str]:
    """``{normalized name: file name}`` of the wheels in ``folder``."""
    return {normalize(p.name.split("-", 1)[0]): p.name for p in sorted(folder.glob("*.whl"))}


def missing_wheels(folder: Path, requirements: Path = REQUIREMENTS) -> list[str]:
    """Carried requirements without a wheel in ``folder``."""
    have = wheel_names(folder) if folder.is_dir() else {}
    return [name for name in carried(requirements) if name not in have]


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.whl"))


def main(argv: list[str]) -> int:
    if argv[:1] == ["coverage"] and len(argv) == 1:
        problems = coverage_problems()
        for line in problems:
            print(f"[wheels] {line}", file=sys.stderr)
        return 1 if problems else 0
    if argv[:1] == ["check-dir"] and len(argv) == 2:
        folder = Path(argv[1])
        missing = missing_wheels(folder)
        if missing:
            print(f"[wheels] {folder} lacks wheels for {', '.join(missing)}: run "
                  f"bash ops/gpu/fetch_wheels.sh on a machine with network", file=sys.stderr)
            return 1
        print(f"[wheels] {folder}: {len(wheel_names(folder))} wheels, "
              f"{folder_bytes(folder) / 2**20:.1f} MiB, every requirement covered")
        return 0
    print("usage: python ops/gpu/wheels.py coverage | check-dir DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
