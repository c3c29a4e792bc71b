"""Prompts ahead of the load: a thread that computes no-cache references for the next batch of
prompts whenever a tenant has fewer than :data:`LOW_WATER` fresh ones left.

Computing every reference before the run would take minutes for a long one (each tenant sends
a few fresh prompts a second); batched on one CPU thread in this process, a batch of 64 takes
about two seconds, a small share of the machine next to the engines. If the load ever outruns
it, the clients repeat recent prompts meanwhile (counted in ``Mix.starved``).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator

from asymcache.ops.soak.prompts import REFERENCE_BATCH, Prompt, References
from asymcache.ops.soak.tenancy import Mix

LOW_WATER = 2 * REFERENCE_BATCH


class Feeder:
    """See the module docstring; :meth:`fill` before the load, then :meth:`start`."""

    def __init__(self, stream: Iterator[Prompt], refs: References, mix: Mix,
                 log: Callable[[str], None]) -> None:
        self.stream, self.refs, self.mix, self.log = stream, refs, mix, log
        self.made = 0  # prompts with a reference so far
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-feeder", daemon=True)

    def fill(self, batches: int) -> None:
        for _ in range(batches):
            self._batch()

    def _batch(self) -> None:
        kept = self.refs.check(list(itertools.islice(self.stream, REFERENCE_BATCH)))
        self.mix.add(kept)
        self.made += len(kept)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self.mix.fresh_left() < LOW_WATER:
                    self._batch()
                else:
                    self._stop.wait(0.2)
        except Exception as e:  # the load goes on with the prompts it has
            self.error = f"{type(e).__name__}: {e}"
            self.log(f"feeder stopped: {self.error}")
