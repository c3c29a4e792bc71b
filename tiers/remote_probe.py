"""What the remote tier measures about its cluster: load cost figures and a header scan.

:class:`LinkFigures` holds ``(latency_s, bandwidth_bps)`` of a load from the cluster for the cost
model (``CostModel.load_cost("remote", n)`` = latency + n / bandwidth). Configured figures are
used as they are; otherwise :meth:`LinkFigures.measure` runs on every connect, and again while it
lacks a figure (the median of a few EXISTS round trips, then a ``probe_bytes`` value written once
and read back three times under a private probe key that expires on its own) and
:meth:`LinkFigures.observe` refines the bandwidth from real reads of 256 KiB or more
(exponential average).

:func:`scan_headers` lists every block under a prefix: SCAN on each reachable primary, then the
first bytes of each value (GETRANGE) decoded by ``tiers/codec.py``.
"""

from __future__ import annotations

import logging
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator

import redis

from asymcache.tiers.base import KEY_BYTES, BlockHeader
from asymcache.tiers.codec import MAX_LAYOUT_BYTES, CorruptValue, decode_header, header_bytes
from asymcache.tiers.remote_config import RemoteTierConfig
from asymcache.tiers.remote_link import ClusterLink
from asymcache.tiers.remote_resp import error_kind

log = logging.getLogger(__name__)
_ROUNDS = 5
_READS = 3
_MIN_SAMPLE_BYTES = 256 << 10
_ALPHA = 0.2  # weight of a new bandwidth sample
_PROBE_TTL_MS = 60_000
_SCAN_COUNT = 512
_GLOB = {ord(c): "\\" + c for c in "*?[]\\"}


class LinkFigures:
    """Load latency and bandwidth of the cluster, configured or measured (module docstring)."""

    def __init__(self, config: RemoteTierConfig) -> None:
        self._cfg = config
        self._lock = threading.Lock()
        self._latency: float | None = None
        self._bandwidth: float | None = None
        if not config.measured:
            self._latency, self._bandwidth = config.load_latency_s, config.load_bandwidth_bps

    def current(self) -> tuple[float, float] | None:
        """``(latency_s, bandwidth_bps)``, or None before the first measurement."""
        with self._lock:
            if self._latency is None or self._bandwidth is None:
                return None
            return self._latency, self._bandwidth

    def measure(self, link: ClusterLink) -> None:
        """Measure latency and bandwidth through ``link`` (no-op with configured figures)."""
        if not self._cfg.measured:
            return
        probe = self._cfg.prefix.encode() + b"probe:" + os.urandom(8).hex().encode()
        latency = _median_seconds(link, [(probe, ("EXISTS", probe))], _ROUNDS)
        if latency is None:
            return
        bandwidth = None
        size = self._cfg.probe_bytes
        if size:
            wrote = link.execute([(probe, ("SET", probe, os.urandom(size), "PX", _PROBE_TTL_MS))])
            if not isinstance(wrote[0], Exception):
                read = _median_seconds(link, [(probe, ("GET", probe))], _READS)
                if read is not None:
                    bandwidth = size / max(read - latency, 1e-9)
            link.execute([(probe, ("DEL", probe))])
        with self._lock:
            self._latency = latency
            if bandwidth is not None:
                self._bandwidth = bandwidth
        log.info("remote tier: load latency %.3f ms, bandwidth %s", latency * 1e3,
                 f"{bandwidth / 1e9:.2f} GB/s" if bandwidth else "not measured")

    def complete(self, link: ClusterLink) -> None:
        """Measure again if the last measurement did not get both figures (e.g. the cluster
        was still forming when it connected)."""
        if self._cfg.probe_bytes and self.current() is None and link.ready:
            self.measure(link)

    def observe(self, seconds: float, nbytes: int) -> None:
        """Fold one read of ``nbytes`` that took ``seconds`` into the bandwidth estimate."""
        if not self._cfg.measured or nbytes < _MIN_SAMPLE_BYTES:
            return
        with self._lock:
            if self._latency is None:
                return
            sample = nbytes / max(seconds - self._latency, 1e-9)
            old = self._bandwidth
            self._bandwidth = sample if old is None else (1 - _ALPHA) * old + _ALPHA * sample


def _median_seconds(link: ClusterLink, commands: list, rounds: int) -> float | None:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        reply = link.execute(commands)[0]
        if isinstance(reply, Exception):
            return None
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def scan_headers(link: ClusterLink, prefix: bytes,
                 count: Callable[[str], None]) -> Iterator[tuple[bytes, BlockHeader]]:
    """``(block key, header)`` of every value under ``prefix`` on the reachable primaries;
    errors and corrupt headers are passed to ``count(kind)`` and skipped."""
    pattern = prefix.decode("utf-8").translate(_GLOB).encode("utf-8") + b"*"
    skipped = set(link.skipped())
    for node in link.primaries():
        if node.name in skipped or node.redis_connection is None:
            continue
        cursor = 0
        while True:
            try:
                cursor, found = node.redis_connection.scan(cursor, match=pattern,
                                                           count=_SCAN_COUNT)
            except redis.RedisError as exc:
                count(error_kind(exc))
                break
            yield from _headers_of(link, prefix, found, count)
            if cursor == 0:
                break


def _headers_of(link: ClusterLink, prefix: bytes, rkeys: list[bytes],
                count: Callable[[str], None]) -> Iterator[tuple[bytes, BlockHeader]]:
    keys = {}
    for rkey in rkeys:
        suffix = rkey[len(prefix):]
        if len(suffix) == 2 * KEY_BYTES:
            try:
                keys[rkey] = bytes.fromhex(suffix.decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                continue
    last = header_bytes(MAX_LAYOUT_BYTES) - 1
    replies = link.execute([(rk, ("GETRANGE", rk, 0, last)) for rk in keys])
    for (rkey, key), reply in zip(keys.items(), replies, strict=True):
        if isinstance(reply, Exception):
            count(error_kind(reply))
        elif reply:  # empty: deleted or expired since the SCAN
            try:
                yield key, decode_header(reply, key=key)[0]
            except CorruptValue as exc:
                count(exc.kind)
                log.warning("remote tier: header of %s is corrupt (%s)", rkey, exc.kind)
