"""The project installs and imports as one ``asymcache`` namespace, beside transformers and
Hugging Face's ``kernels`` (docs/architecture.md, "Import names"), and the tree is ruff clean."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = ("cacheserver", "engine", "kernels", "tiers", "ops")

# Imports every module of the installed ``asymcache`` (``__main__`` modules would run their
# command) and prints how many and where they came from. pkgutil skips namespace folders.
_IMPORT_ALL = """
import importlib, pathlib
import asymcache
(root,) = asymcache.__path__
names = sorted(".".join(("asymcache", *p.relative_to(root).with_suffix("").parts))
               .removesuffix(".__init__")
               for p in pathlib.Path(root).rglob("*.py") if p.stem != "__main__")
for name in names:
    importlib.import_module(name)
import asymcache.kernels.api as api
print(len(names), api.__file__)
"""


def _run(cmd: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def test_the_package_list_in_pyproject_is_every_folder_of_python_files() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    tree = {
        "asymcache." + ".".join(d.relative_to(ROOT).parts)
        for top in TOP_LEVEL
        for d in [ROOT / top, *(ROOT / top).rglob("*")]
        if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py"))
    }
    assert set(config["packages"]) == tree
    assert config["package-dir"] == {f"asymcache.{top}": top for top in TOP_LEVEL}


def test_no_top_level_folder_is_a_regular_package_that_could_shadow_another() -> None:
    assert [top for top in TOP_LEVEL if (ROOT / top / "__init__.py").exists()] == []


@pytest.mark.parametrize("where", ["repository root", "another folder"])
def test_transformers_imports_hugging_faces_kernels_not_ours(where: str, tmp_path) -> None:
    # The clash this guards against needs both distributions present: they are in the dev extra.
    assert importlib.metadata.version("kernels") and importlib.metadata.version("transformers")
    cwd = ROOT if where == "repository root" else tmp_path
    code = ("import transformers.activations, kernels, asymcache.engine.llm as llm; "
            "print(kernels.__file__); print(llm.__file__)")
    run = _run([sys.executable, "-c", code], cwd)
    assert run.returncode == 0, run.stderr
    hf_kernels, ours = run.stdout.split()
    installed = importlib.metadata.distribution("kernels").locate_file("kernels/__init__.py")
    assert Path(hf_kernels) == Path(installed).resolve()  # Hugging Face's, from site-packages
    assert Path(ours) == ROOT / "engine" / "llm.py"  # the editable install of this checkout


@pytest.mark.slow
def test_a_wheel_in_a_fresh_virtualenv_imports_every_module_and_runs_help(tmp_path) -> None:
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources it builds.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for top in TOP_LEVEL:
        shutil.copytree(ROOT / top, source / top, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    build = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                  "-w", str(wheels), str(source)], tmp_path, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("asymcache-*.whl")
    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=False)
    python = fresh / "bin" / "python"
    install = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", str(wheel)], tmp_path, timeout=300)
    assert install.returncode == 0, install.stderr
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     tmp_path).stdout.strip())
    assert sorted(p.name for p in site.iterdir() if not p.name.endswith((".dist-info", ".pth"))
                  and not p.name.startswith("_")) == ["asymcache"]  # one name in site-packages
    # The dependencies come from this environment, appended after the wheel (a plain path in a
    # .pth: this environment's own .pth files, the editable finder among them, are not run).
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages" and p.is_dir())
    (site / "zz_test_dependencies.pth").write_text(f"{deps}\n")
    imported = _run([str(python), "-c", _IMPORT_ALL], tmp_path, timeout=300)
    assert imported.returncode == 0, imported.stderr
    count, api_file = imported.stdout.split()
    assert int(count) > 100 and Path(api_file).is_relative_to(site)
    helped = _run([str(fresh / "bin" / "asymcache"), "--help"], tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "usage: asymcache" in helped.stdout and "demo" in helped.stdout


def test_ruff_finds_nothing_in_the_tree() -> None:
    run = _run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
