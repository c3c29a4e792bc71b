"""Built-in trace formats; importing this package registers them with ``asymcache.ops.sim.trace``.

* ``mooncake`` — Mooncake FAST'25 JSONL (hash ids per 512-token block), replayed as recorded,
  and its superset with sessions (``session_id``, ``session_end``, ``retention_s``, ...);
  ``sessions=chain`` rebuilds sessions from prefix chains (``chains``), ``jsonl_out`` writes it.
* ``azure`` — Azure LLM inference 2023 CSV (lengths only); sessions and shared prefixes are
  synthesised by a seeded model (``azure.AzureSynthesis``).
* ``chat`` — generated multi-turn chat sessions (``chat.ChatWorkload``).
* ``agent`` — generated agent sessions with tool-call pauses and TTL pins
  (``agent.AgentWorkload``).
"""

from __future__ import annotations

from asymcache.ops.sim.formats import agent, azure, chat, mooncake

__all__ = ["agent", "azure", "chat", "mooncake"]
