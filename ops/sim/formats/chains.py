"""Sessions rebuilt from prefix chains, for traces that record none (``sessions=chain``).

A request whose full-block list starts with the *entire* full-block list of an earlier request
continues that request's session: the longest such list wins, then the most recent. Otherwise
it opens a new session. Only a request that added a block never seen before can be continued:
a prompt made wholly of known blocks (a bare shared system prompt, a repeat) carries nothing of
its own that a later turn could extend, and letting it anchor sessions would merge every
conversation behind a common first block into one (the Mooncake conversation trace: 17
sessions for 12,031 requests; with this rule about 8,000). Only what a client knows when it
sends a request is used, so no ``session_end`` is ever set: whether a request was the last of
its session is known only later.
"""

from __future__ import annotations

from dataclasses import replace

from asymcache.ops.sim.trace import Request


def chain_sessions(requests: list[Request]) -> list[Request]:
    """``requests`` (in arrival order) with ``session`` set to 0, 1, 2... by prefix chains.

    A trie of block prefixes (node ids from ``(parent, block)``) maps each request's full-block
    list to a node; ``ends`` holds, per node, the session of the latest request whose list ends
    there. Each request walks its own blocks once: O(total blocks).
    """
    child: dict[tuple[int, int], int] = {}
    ends: dict[int, int] = {}
    sessions = 0
    out = []
    for req in requests:
        node, session, fresh = 0, -1, False
        for block in req.blocks:
            nxt = child.get((node, block))
            if nxt is None:
                nxt = child[(node, block)] = len(child) + 1
                fresh = True
            node = nxt
            session = ends.get(node, session)
        if session < 0:
            session, sessions = sessions, sessions + 1
        if fresh:
            ends[node] = session
        out.append(replace(req, session=session))
    return out
