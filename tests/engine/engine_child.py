"""A second engine process for the sharing test: ``python -m tests.engine.engine_child SPEC``.

``SPEC`` is JSON ``{"endpoint": ..., "prompts": [[ids...]], "max_tokens": n}``. The child
generates greedily on the built-in model against the daemon at ``endpoint`` and prints one JSON
line: per prompt its ``token_ids`` and prompt tokens by source.
"""

from __future__ import annotations

import json
import sys

from tests.engine.engine_fixtures import greedy, make_llm


def main(spec: dict) -> dict:
    llm = make_llm(cache_endpoint=spec["endpoint"])
    try:
        outs = llm.generate(spec["prompts"], greedy(spec["max_tokens"]))
    finally:
        llm.close()
    return {"outputs": [{"token_ids": o.token_ids, "resident": o.stats.resident_tokens,
                         "fetched": o.stats.fetched_tokens, "new": o.stats.new_tokens}
                        for o in outs]}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))), flush=True)
