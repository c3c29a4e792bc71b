"""The Dockerfiles, read statically (no Docker engine here), and the health check they run,
executed for real against a real daemon started without the engine's dependencies."""

from __future__ import annotations

import fnmatch
import subprocess
import sys

import pytest

from tests.docker.compose import Dockerfile, rendered
from tests.docker.services import DOCKER, REPO, Service, free_port

IMAGES = {"daemon.Dockerfile": "/healthz", "engine.Dockerfile": "/health"}


def _admitted(path: str, ignore_file: str) -> bool:
    """Whether a .dockerignore keeps ``path`` in the build context (last matching rule wins;
    a rule matching a parent directory matches the path)."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    keep = True
    for line in (DOCKER / ignore_file).read_text().splitlines():
        rule = line.strip()
        if not rule or rule.startswith("#"):
            continue
        negated, pattern = rule.startswith("!"), rule.lstrip("!")
        if any(fnmatch.fnmatchcase(p, pattern) for p in prefixes):
            keep = negated
    return keep


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_image_runs_as_the_same_non_root_user(name: str) -> None:
    final = Dockerfile.read(name).final_stage()
    users = final.all("USER")
    assert users and users[-1] not in ("root", "0"), f"{name} runs as {users[-1:]}"
    assert "ASYMCACHE_UID=10001" in final.all("ARG"), "daemon and engine must share one uid"


@pytest.mark.parametrize(("name", "path"), sorted(IMAGES.items()))
def test_image_health_check_asks_the_service_own_endpoint(name: str, path: str) -> None:
    final = Dockerfile.read(name).final_stage()
    (check,) = final.all("HEALTHCHECK")
    assert "asymcache-healthcheck" in check and f'/{path.strip("/")}"' in check
    assert "docker/healthcheck.py /usr/local/bin/asymcache-healthcheck" in final.all("COPY")


def test_daemon_image_installs_the_project_without_the_engine_extra() -> None:
    installs = [r for r in Dockerfile.read("daemon.Dockerfile").final_stage().all("RUN")
                if "pip install" in r]
    assert installs and not any("[engine]" in r or "torch==" in r for r in installs)
    assert any("find_spec('torch') is not None" in r for r in installs), "no torch-free guard"


def test_engine_image_variant_selects_the_torch_build() -> None:
    final = Dockerfile.read("engine.Dockerfile").final_stage()
    assert "VARIANT=cpu" in final.all("ARG")
    runs = " ".join(final.all("RUN"))
    assert "cpu|cuda)" in runs and "[engine]" in runs and "torch==${TORCH_VERSION}" in runs


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_build_context_admits_every_copied_source(name: str) -> None:
    for source in Dockerfile.read(name).copy_sources():
        assert (REPO / source).exists(), f"{name} copies {source}, missing from the checkout"
        assert _admitted(source, f"{name}.dockerignore"), f"{name}.dockerignore drops {source}"
    assert not _admitted(".venv/bin/python", f"{name}.dockerignore")


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_images_install_the_dependency_set_the_suite_passed_with(name: str) -> None:
    final = Dockerfile.read(name).final_stage()
    (target,) = [c.split()[-1] for c in final.all("COPY") if c.startswith(".ci/constraints.txt ")]
    installs = [r for r in final.all("RUN") if "[engine]" in r or "[remote]" in r]
    assert installs and all(f"-c {target} " in r for r in installs)


def test_compose_build_args_are_declared_by_the_dockerfiles() -> None:
    builds = {name: s["build"] for name, s in rendered()["services"].items() if "build" in s}
    assert set(builds) == {"cacheserver", "engine", "engine-gpu"}  # the images this repo builds
    for service_name, build in builds.items():
        declared = {a.split("=", 1)[0] for a in Dockerfile.read(
            build["dockerfile"].removeprefix("docker/")).all("ARG")}
        assert set(build.get("args", {})) <= declared, service_name


def _healthcheck(url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DOCKER / "healthcheck.py"), url, "--timeout", "3"],
                          capture_output=True, text=True, timeout=30)


def test_healthcheck_passes_on_the_torch_free_daemon_and_fails_otherwise(daemon: Service) -> None:
    assert _healthcheck(daemon.url + "/healthz").returncode == 0
    missing = _healthcheck(daemon.url + "/nowhere")
    assert missing.returncode == 1 and "404" in missing.stderr
    closed = _healthcheck(f"http://127.0.0.1:{free_port()}/healthz")
    assert closed.returncode == 1 and "did not answer" in closed.stderr
    assert _healthcheck("ftp://127.0.0.1/healthz").returncode == 2
