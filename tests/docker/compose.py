"""Reading the deployment files as Docker would: ``docker-compose config`` and the Dockerfiles.

``docker-compose config`` (Debian's docker-compose 1.29) validates the file against the Compose
Specification and interpolates ``docker/.env`` without a Docker engine; :func:`rendered` returns
its output as a dict. The environment is scrubbed so the shell's variables cannot hide a setting
missing from ``.env``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from tests.docker.services import DOCKER

COMPOSE_FILE = DOCKER / "docker-compose.yml"
ENV_FILE = DOCKER / ".env"
_DOCKER_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def run_compose(*args: str, env_file: Path | None = None,
                extra_files: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``docker-compose [--env-file F] -f docker/docker-compose.yml [-f docker/EXTRA] ARGS``,
    run from ``docker/``."""
    binary = shutil.which("docker-compose")
    if binary is None:
        raise RuntimeError("docker-compose is not installed: run `bash .ci/setup --test` (apt)")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    cmd = [binary] + (["--env-file", str(env_file)] if env_file else [])
    for path in (COMPOSE_FILE, *(DOCKER / name for name in extra_files)):
        cmd += ["-f", str(path)]
    cmd += list(args)
    return subprocess.run(cmd, cwd=DOCKER, env=env, capture_output=True, text=True, timeout=120)


@cache
def rendered(*extra_files: str) -> dict:
    """The validated, interpolated compose file(s) (fails with docker-compose's own message)."""
    done = run_compose("config", extra_files=extra_files)
    if done.returncode != 0:
        raise AssertionError(f"docker-compose config refused the file:\n{done.stderr}")
    return yaml.safe_load(done.stdout)


def dotenv() -> dict[str, str]:
    """``docker/.env`` as a dict (``KEY=VALUE`` lines; comments and blank lines skipped)."""
    out = {}
    for line in ENV_FILE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def docker_size(text: str | int) -> int:
    """Bytes of a Docker size (``3g``, ``512m``, ``3gb``; binary units, as Docker reads them)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"(\d+)\s*([bkmg]?)b?", str(text).strip().lower())
    if m is None:
        raise ValueError(f"not a Docker size: {text!r}")
    return int(m.group(1)) * _DOCKER_UNITS[m.group(2)]


@dataclass(frozen=True)
class Dockerfile:
    """The instructions of one Dockerfile, continuation lines joined, comments dropped."""

    path: Path
    instructions: tuple[tuple[str, str], ...]

    @classmethod
    def read(cls, name: str) -> Dockerfile:
        path = DOCKER / name
        joined = re.sub(r"\\\n", " ", path.read_text())
        pairs = []
        for line in joined.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                word, _, rest = line.partition(" ")
                pairs.append((word.upper(), " ".join(rest.split())))
        return cls(path, tuple(pairs))

    def all(self, instruction: str) -> list[str]:
        return [rest for word, rest in self.instructions if word == instruction]

    def final_stage(self) -> Dockerfile:
        """Only the instructions of the last ``FROM`` stage (what the image runs with)."""
        starts = [i for i, (word, _) in enumerate(self.instructions) if word == "FROM"]
        return Dockerfile(self.path, self.instructions[starts[-1]:])

    def copy_sources(self) -> list[str]:
        """Sources of ``COPY`` instructions that read the build context (not ``--from``)."""
        sources = []
        for rest in self.all("COPY"):
            words = rest.split()
            if any(w.startswith("--from") for w in words):
                continue
            sources += [w for w in words[:-1] if not w.startswith("--")]
        return sources
