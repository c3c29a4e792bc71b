"""Container health check: ``python healthcheck.py URL`` exits 0 if ``GET URL`` answers 2xx.

Both images run it from their ``HEALTHCHECK`` (the daemon on ``/healthz``, the engine on
``/health``); it needs nothing but the standard library, so it works in the torch-free daemon
image. Any other status, a refused connection or no answer within ``--timeout`` seconds exits 1
with one line on stderr saying what happened (Docker keeps it in ``docker inspect``).
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request


def check(url: str, timeout_s: float) -> str | None:
    """``None`` if ``url`` answers 2xx within ``timeout_s``, else what went wrong."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            status = reply.status
    except urllib.error.HTTPError as e:
        return f"{url} answered {e.code} {e.reason}"
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        return f"{url} did not answer: {reason}"
    if not 200 <= status < 300:
        return f"{url} answered {status}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Exit 0 if URL answers 2xx, else 1.")
    parser.add_argument("url", help="e.g. http://127.0.0.1:9465/healthz")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    args = parser.parse_args(argv)
    if not args.url.startswith(("http://", "https://")):
        print(f"healthcheck: not an http(s) URL: {args.url!r}", file=sys.stderr)
        return 2
    problem = check(args.url, args.timeout)
    if problem is not None:
        print(f"healthcheck: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
