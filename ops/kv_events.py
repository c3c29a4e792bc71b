"""An index of which blocks each tier of a host holds, built from the daemon's KV events
(docs/daemon.md, "KV events"); the subscriber that feeds it is the engine's
(``engine/kv_events.py``).

Used by the cache-aware router (``ops/route.py``) and ``asymcache bench events``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class HostIndex:
    """What one daemon's host holds, from its events: key -> set of places (``"CPU"``,
    ``"DISK"``, ``"REMOTE"``, ``"GPU:<engine>"``), and each block's parent."""

    places: dict[bytes, set[str]] = field(default_factory=dict)
    parents: dict[bytes, bytes | None] = field(default_factory=dict)

    def apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "AllBlocksCleared":
            self.places.clear()
            self.parents.clear()
            return
        medium = event["medium"]
        place = f"GPU:{event['engine_id']}" if medium == "GPU" else medium
        if kind == "BlockStored":
            parent = event.get("parent_block_hash")
            for key in event["block_hashes"]:
                self.places.setdefault(key, set()).add(place)
                self.parents[key] = parent
                parent = key
        elif kind == "BlockRemoved":
            for key in event["block_hashes"]:
                held = self.places.get(key)
                if held is not None:
                    held.discard(place)
                    if not held:
                        del self.places[key]
                        self.parents.pop(key, None)

    def count(self, place: str) -> int:
        return sum(1 for held in self.places.values() if place in held)
