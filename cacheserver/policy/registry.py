"""Policies by name: ``register_policy`` (a class decorator), ``create_policy``, ``policy_names``.

Importing ``asymcache.cacheserver.policy`` registers every built-in policy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from asymcache.cacheserver.policy.base import ResidencyPolicy

_REGISTRY: dict[str, type[ResidencyPolicy]] = {}


def register_policy(name: str) -> Callable[[type[ResidencyPolicy]], type[ResidencyPolicy]]:
    """Class decorator: make a policy constructible by ``create_policy(name, ...)``."""

    def deco(cls: type[ResidencyPolicy]) -> type[ResidencyPolicy]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"policy name {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def policy_names(include_offline: bool = True) -> list[str]:
    return sorted(n for n, c in _REGISTRY.items() if include_offline or not c.offline)


def policy_class(name: str) -> type[ResidencyPolicy]:
    """The class registered under ``name``; unknown names fail with the list of known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; known: {policy_names()}") from None


def create_policy(name: str, capacity: int, **kwargs: object) -> ResidencyPolicy:
    """Build a registered policy by name; unknown names fail with the list of known ones."""
    return policy_class(name)(capacity, **kwargs)  # type: ignore[arg-type]
