"""Typed ``key=value`` options (trace loaders, policy configs) read into a frozen dataclass."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def apply_options(defaults: T, opts: dict[str, str]) -> T:
    """``defaults`` with the fields named in ``opts`` replaced (parsed to the field's type).

    Unknown names and unparsable values raise ``ValueError`` naming the option.
    """
    fields = {f.name: f for f in dataclasses.fields(defaults)}  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    for name, text in opts.items():
        if name not in fields:
            raise ValueError(f"unknown option {name!r}; known: {sorted(fields)}")
        kind = type(getattr(defaults, name))
        try:
            changes[name] = _parse(kind, text)
        except ValueError:
            raise ValueError(f"option {name}={text!r} is not a valid {kind.__name__}") from None
    return dataclasses.replace(defaults, **changes)  # type: ignore[type-var]


def _parse(kind: type, text: str) -> Any:
    if kind is bool:
        lowered = text.strip().lower()
        if lowered not in _BOOLS:
            raise ValueError(text)
        return _BOOLS[lowered]
    if kind is int:
        value = float(text)
        if value != int(value):
            raise ValueError(text)
        return int(value)
    return kind(text)


_BOOLS = {"1": True, "true": True, "yes": True, "on": True,
          "0": False, "false": False, "no": False, "off": False}
