"""``asymcache events``: print a daemon's KV events as they come (docs/daemon.md, "KV events")."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import TYPE_CHECKING

from asymcache.ops.commands.ping import add_curve, curve_of

if TYPE_CHECKING:
    from asymcache.engine.kv_events import Batch

NAME = "events"
HELP = "print a cache daemon's KV events live (which blocks each tier stores and removes)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", required=True,
                        help="the daemon's events_endpoint (ipc://PATH or tcp://HOST:PORT)")
    parser.add_argument("--replay-endpoint", default="",
                        help="its events_replay_endpoint: print what it still keeps first, and "
                             "fill gaps")
    parser.add_argument("--namespace", action="append", default=[], metavar="HEX",
                        help="only this namespace (its digest in hex, as in the topic kv/HEX); "
                             "repeatable")
    parser.add_argument("--seconds", type=float, default=0.0,
                        help="stop after this many seconds (default: run until interrupted)")
    parser.add_argument("--count", type=int, default=0,
                        help="stop after this many batches (default: no limit)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per batch (hashes in hex) instead of text")
    add_curve(parser)


def run(args: argparse.Namespace) -> int:
    from asymcache.engine.kv_events import TOPIC_PREFIX, EventSubscriber

    topics = tuple(TOPIC_PREFIX + ns.lower().encode() for ns in args.namespace) or (TOPIC_PREFIX,)
    sub = EventSubscriber(args.endpoint, args.replay_endpoint, topics, curve=curve_of(args))
    forever = args.seconds <= 0
    printed = 0
    try:
        while True:
            for batch in sub.batches(1.0 if forever else args.seconds):
                print(_json(batch) if args.json else _text(batch), flush=True)
                printed += 1
                if args.count and printed >= args.count:
                    return 0
            if not forever:
                return 0
    except KeyboardInterrupt:
        return 0
    except (ValueError, TimeoutError) as e:
        print(f"asymcache events: {e}", file=sys.stderr)
        return 1
    finally:
        sub.close()


def _hex(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_hex(v) for v in value]
    return value


def _json(b: Batch) -> str:
    return json.dumps({"seq": b.seq, "topic": b.topic.decode(), "ts": b.ts,
                       "events": [{k: _hex(v) for k, v in e.items()} for e in b.events]})


def _text(b: Batch) -> str:
    when = datetime.datetime.fromtimestamp(b.ts).strftime("%H:%M:%S.%f")[:-3]
    lines = [f"#{b.seq} {when} {b.topic.decode()}"]
    for e in b.events:
        kind = e.get("type", "?")
        if kind == "AllBlocksCleared":
            lines.append("  AllBlocksCleared (the daemon started: forget what it said before)")
            continue
        where = e.get("medium", "?") + (f" of {e['engine_id']}" if e.get("engine_id") else "")
        keys = e.get("block_hashes", [])
        shown = " ".join(k.hex()[:12] for k in keys[:4]) + (" …" if len(keys) > 4 else "")
        verb = "stored in" if kind == "BlockStored" else "removed from"
        line = f"  {len(keys)} block{'s' * (len(keys) != 1)} {verb} {where}: {shown}"
        if kind == "BlockStored":
            parent = e.get("parent_block_hash")
            line += f" (after {parent.hex()[:12] if parent else 'the start'}, " \
                    f"{e.get('block_size')} tokens each)"
        lines.append(line)
    return "\n".join(lines)
