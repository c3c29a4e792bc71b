"""One loader for the daemon's and the engine's settings (standard library only, torch-free).

Precedence for both, lowest first: the frozen dataclass's defaults < a TOML file < environment
variables < command-line flags. A setting's key is its field name; a field whose type is a
dataclass is a section, a TOML table whose fields have dotted keys (``remote.nodes``); the file
holds the keys at top level or under the program's table (``[daemon]``, ``[engine]``). In the
environment a key is the program's prefix and the key in upper case, ``.`` spelled ``__``
(``ASYMCACHE_DAEMON_REMOTE__NODES``); as a flag, ``--`` and the key with ``.``/``_`` as ``-``.
Values are converted to the field's type (``*_bytes`` take units: ``512MiB``), failing with the
key and the value's source; ``__post_init__`` checks ranges. Unknown keys fail with their name;
old spellings (:attr:`Scheme.renamed`, ``<Scheme.legacy_env><OLD KEY>``) log a warning.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from functools import cache
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

log = logging.getLogger("asymcache.config")
DEFAULT = "default"
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}
_BOOLS = {"1": True, "true": True, "yes": True, "on": True,
          "0": False, "false": False, "no": False, "off": False}


@dataclass(frozen=True)
class Scheme:
    """How one program's settings are spelled outside the code."""

    program: str  # "daemon" or "engine": its TOML table, and the word used in messages
    root: type  # the frozen dataclass the rest of the code reads
    env_prefix: str  # e.g. "ASYMCACHE_DAEMON_"
    renamed: Mapping[str, str] = field(default_factory=dict)  # old key -> current key
    legacy_env: str = ""  # old prefix: <legacy_env><OLD KEY> still read, with a warning

    def env_name(self, key: str) -> str:
        return self.env_prefix + key.replace(".", "__").upper()


def flag_name(key: str) -> str:
    return "--" + re.sub(r"[._]", "-", key)


@dataclass(frozen=True)
class Loaded:
    """The configuration object and, per key set by other than a default, where it came from
    (``file PATH``, ``env NAME`` or ``flag --name``)."""

    config: Any
    sources: dict[str, str]

    def rows(self) -> list[tuple[str, Any, str]]:
        """``(key, value, source)`` per setting; secrets (``repr=False`` fields) masked."""
        return [(key, "***" if secret and value else value, self.sources.get(key, DEFAULT))
                for key, value, secret in _walk(self.config)]


def load(scheme: Scheme, path: str | Path | None = None, environ: Mapping[str, str] | None = None,
         flags: Mapping[str, Any] | None = None) -> Loaded:
    """Defaults < TOML file ``path`` < ``environ`` (``os.environ`` when ``None``) < ``flags``
    (key -> raw value; ``None`` values skipped)."""
    hints = keys(scheme.root)
    given: dict[str, Any] = {}
    sources: dict[str, str] = {}
    env = os.environ if environ is None else environ
    for key, raw, source in [*_from_file(scheme, Path(path) if path else None),
                             *_from_env(scheme, env), *_from_flags(scheme, flags or {})]:
        given[key] = _convert(key, raw, hints[key], source)
        sources[key] = source
    try:
        return Loaded(_build(scheme.root, given), sources)
    except ValueError as e:  # add where the value of the field it names came from
        named = str(e).split(":")[0].split(" ")[0].removeprefix(f"{scheme.root.__name__}.")
        raise ValueError(f"{e} (from {sources[named]})" if named in sources else str(e)) from None


@cache
def keys(cls: type, prefix: str = "") -> dict[str, Any]:
    """Every setting of ``cls`` as dotted key -> type."""
    out: dict[str, Any] = {}
    for name, hint in get_type_hints(cls).items():
        out.update(keys(hint, f"{prefix}{name}.") if is_dataclass(hint) else {prefix + name: hint})
    return out


def add_flags(parser: argparse.ArgumentParser, scheme: Scheme, helps: Mapping[str, str]) -> None:
    """``--config FILE`` and ``--KEY VALUE`` per setting (its dest is the key; a bool's value
    may be left out: ``--insecure-tcp`` is ``--insecure-tcp true``); old spellings of renamed
    flags are accepted, unlisted."""
    parser.add_argument("--config", metavar="FILE", help=f"TOML file of {scheme.program} settings")
    for key, hint in keys(scheme.root).items():
        metavar = "BOOL" if hint is bool else re.split(r"[._]", key)[-1].upper()
        bare = {"nargs": "?", "const": "true"} if hint is bool else {}
        parser.add_argument(flag_name(key), dest=key, metavar=metavar,
                            help=helps.get(key, f"see docs/{scheme.program}.md"), **bare)
    for old, new in scheme.renamed.items():
        if flag_name(old) != flag_name(new):
            parser.add_argument(flag_name(old), dest=old, help=argparse.SUPPRESS)


def given_flags(args: argparse.Namespace, scheme: Scheme) -> dict[str, Any]:
    """The settings flags of ``args`` that were given (see :func:`add_flags`)."""
    names = [*keys(scheme.root), *scheme.renamed]
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def parse_size(text: str) -> int:
    """``"512MiB"`` -> 536870912; plain digits are bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", text, re.IGNORECASE)
    if m is None:
        raise ValueError(f"not a size: {text!r} (use e.g. 4096, 64KiB, 512MiB, 4GiB)")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").upper()])


def _resolve(scheme: Scheme, key: str, where: str, spell: Any = str, old: bool = True) -> str:
    """``key`` as a current key (an ``old`` one logs a warning); an unknown key fails."""
    if old and key in scheme.renamed:
        new = scheme.renamed[key]
        if spell(key) != spell(new):
            _renamed(scheme, spell(key), spell(new))
        return new
    known = keys(scheme.root)
    if key not in known:
        near = difflib.get_close_matches(key, list(known), n=1)
        hint = f" (did you mean {spell(near[0])}?)" if near else ""
        raise ValueError(f"{where}: unknown {scheme.program} setting{hint}; all settings: "
                         f"asymcache config show --{scheme.program}")
    return key


def _renamed(scheme: Scheme, old: str, new: str) -> None:
    log.warning("%s is renamed %s (a %s setting; the old spelling still works for now)",
                old, new, scheme.program)


def _from_file(scheme: Scheme, path: Path | None) -> list[tuple[str, Any, str]]:
    if path is None:
        return []
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"cannot read {scheme.program} config {path}: {e}") from None
    table = data.get(scheme.program, data)
    if not isinstance(table, dict):
        raise ValueError(f"{path}: [{scheme.program}] must be a table")
    return [(_resolve(scheme, key, f"{key} (in {path})"), raw, f"file {path}")
            for key, raw in _flatten(table)]


def _flatten(table: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in table.items():
        out += _flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else [
            (prefix + key, value)]
    return out


def _from_env(scheme: Scheme, env: Mapping[str, str]) -> list[tuple[str, Any, str]]:
    out = []
    if scheme.legacy_env:  # old names first: the current spelling wins when both are set
        old_keys = [k for k in keys(scheme.root) if "." not in k] + list(scheme.renamed)
        for old in old_keys:
            var = scheme.legacy_env + old.upper()
            new = scheme.renamed.get(old, old)
            if var in env:
                _renamed(scheme, var, scheme.env_name(new))
                out.append((new, env[var], f"env {var}"))
    for var in sorted(v for v in env if v.startswith(scheme.env_prefix)):
        key = var[len(scheme.env_prefix):].lower().replace("__", ".")
        if key not in keys(scheme.root):
            _resolve(scheme, key, var, scheme.env_name, old=False)  # fails naming it
        out.append((key, env[var], f"env {var}"))
    return out


def _from_flags(scheme: Scheme, flags: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
    return [(_resolve(scheme, key, flag_name(key), flag_name), raw, f"flag {flag_name(key)}")
            for key, raw in flags.items() if raw is not None]


def _convert(key: str, raw: Any, hint: Any, source: str) -> Any:
    """``raw`` (TOML value, or text of an environment variable or flag) as type ``hint``."""
    try:
        options = [a for a in get_args(hint) if a is not type(None)]
        if len(options) < len(get_args(hint)):  # X | None: "" is None
            if raw == "":
                return None
            hint = options[0]
        base = get_origin(hint) or hint
        if isinstance(raw, str) and base is not str:
            raw = _parse_text(key, raw.strip(), base)
        if base is tuple and isinstance(raw, list):
            raw = tuple(raw)
        if not isinstance(raw, int | float if base is float else base) or (
                isinstance(raw, bool) and base is not bool):
            raise ValueError(f"must be {base.__name__}, got {raw!r}")
        return raw
    except ValueError as e:
        raise ValueError(f"{key} (from {source}): {e}") from None


def _parse_text(key: str, text: str, base: type) -> Any:
    if base is bool:
        if text.lower() not in _BOOLS:
            raise ValueError(f"expected true or false, got {text!r}")
        return _BOOLS[text.lower()]
    if base is int:
        return parse_size(text) if key.endswith("_bytes") else int(text)
    if base is float:
        return float(text)
    if base is tuple:
        return tuple(x.strip() for x in text.split(",") if x.strip())
    return text


def _build(cls: type, given: Mapping[str, Any], prefix: str = "") -> Any:
    kwargs = {}
    for name, hint in get_type_hints(cls).items():
        if is_dataclass(hint):
            kwargs[name] = _build(hint, given, f"{prefix}{name}.")
        elif prefix + name in given:
            kwargs[name] = given[prefix + name]
    return cls(**kwargs)


def _walk(obj: Any, prefix: str = "") -> list[tuple[str, Any, bool]]:
    out: list[tuple[str, Any, bool]] = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        out += _walk(value, f"{prefix}{f.name}.") if is_dataclass(value) else [
            (prefix + f.name, value, not f.repr)]
    return out
