"""Typed ``key=value`` options for trace loaders, read into a frozen parameter dataclass."""

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
            changes[name] = kind(float(text)) if kind is int else kind(text)
        except ValueError:
            raise ValueError(f"option {name}={text!r} is not a valid {kind.__name__}") from None
    return dataclasses.replace(defaults, **changes)  # type: ignore[type-var]
