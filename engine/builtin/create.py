"""Create the built-in model folder on first use, atomically and deterministically.

The folder is a normal Hugging Face folder (``config.json``, ``generation_config.json``,
``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``), so transformers can load
it as well. It is written into a private temporary folder next to the target and renamed into
place, so a reader never sees a half-written model; when two processes race, the first rename
wins and the other discards its copy (both copies are byte-identical anyway).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from safetensors.numpy import save_file

from asymcache.engine.builtin.spec import BuiltinSpec
from asymcache.engine.builtin.vocab import train_tokenizer
from asymcache.engine.builtin.weights import random_weights

FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
         "tokenizer_config.json")


def default_cache_root() -> Path:
    """``$ASYMCACHE_CACHE_DIR``, else ``$XDG_CACHE_HOME/asymcache``, else ``~/.cache/asymcache``."""
    explicit = os.environ.get("ASYMCACHE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "asymcache"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_builtin(folder: Path, spec: BuiltinSpec) -> None:
    """Write every file of the built-in model into the existing, empty ``folder``."""
    tokenizer = train_tokenizer(spec)
    tokenizer.save(str(folder / "tokenizer.json"))
    _write_json(folder / "tokenizer_config.json", spec.tokenizer_config())
    _write_json(folder / "config.json", spec.hf_config())
    _write_json(folder / "generation_config.json", spec.generation_config())
    save_file(random_weights(spec), str(folder / "model.safetensors"),
              metadata={"format": "pt"})


def ensure_builtin_model(cache_root: str | Path | None = None,
                         spec: BuiltinSpec | None = None) -> Path:
    """Path of the built-in model folder ``<cache_root>/builtin-<version>``, created if absent.

    ``cache_root`` defaults to :func:`default_cache_root`. Raises ``RuntimeError`` if the
    folder exists but lacks files (delete it to have it rebuilt).
    """
    spec = spec or BuiltinSpec()
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    target = root / f"builtin-{spec.version}"
    if not target.exists():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".builtin-{spec.version}-", dir=root))
        try:
            write_builtin(tmp, spec)
            tmp.chmod(0o755)  # mkdtemp makes it private; the model folder is ordinary
            os.rename(tmp, target)
        except OSError:
            if not target.exists():  # not a lost race: a real error
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    missing = [name for name in FILES if not (target / name).is_file()]
    if missing:
        raise RuntimeError(
            f"built-in model folder {target} lacks {', '.join(missing)}; delete it to rebuild")
    return target


def resolve_model_dir(model: str | Path, cache_root: str | Path | None = None) -> Path:
    """``"builtin"`` → the built-in folder (created on first use); anything else → that path."""
    if str(model) == "builtin":
        return ensure_builtin_model(cache_root)
    path = Path(model)
    if not path.is_dir():
        raise FileNotFoundError(f"model folder {str(model)!r} does not exist (or use 'builtin')")
    return path
