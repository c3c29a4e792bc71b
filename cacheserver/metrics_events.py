"""Event counters and histograms of the event-loop thread, cheap enough for every request.

``prometheus_client``'s ``Counter`` and ``Histogram`` take a lock on every ``inc``/``observe``
(a histogram also walks its buckets in Python): about a microsecond per request on the daemon's
hot path. The daemon's request counters are only ever touched from its event-loop thread, and
``/metrics`` is answered from that same thread, so these children are plain numbers: ``inc`` is
one addition, ``observe`` one ``bisect`` and two additions. :class:`EventFamily` exports them
with exactly the names, labels, values and ``_created`` samples the ``prometheus_client``
classes would (a counter ``..._total``, a histogram's cumulative ``_bucket{le}``, ``_count`` and
``_sum``). Not thread-safe: counters updated from other threads use ``prometheus_client``.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString


class EventCounter:
    """A monotonic count (``value``) since ``created`` (Unix time)."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (>= 0; callers pass counts of events or bytes)."""
        self.value += amount


class EventHistogram:
    """Observations counted in the buckets ``bounds`` (ascending upper bounds; +Inf implied)."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose bound is >= it (Prometheus ``le``)."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        """``[(le, count of observations <= le), ...]`` ending with ``("+Inf", total)``."""
        out, total = [], 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += n
            out.append((floatToGoString(bound), float(total)))
        return out


class EventFamily:
    """One metric family of :class:`EventCounter` or :class:`EventHistogram` children, one per
    value of its label (``label=None``: a single unlabelled child, key ``""``). Children are
    made up front for every value given, so their series exist (at 0) from the start; an
    unforeseen value gets its child on first use."""

    def __init__(self, name: str, doc: str, label: str | None, values: Iterable[str] = ("",),
                 buckets: tuple[float, ...] | None = None) -> None:
        self.name, self.doc, self.label, self.buckets = name, doc, label, buckets
        self.children: dict[str, EventCounter | EventHistogram] = {}
        for value in values:
            self.child(value)

    def child(self, value: str = "") -> EventCounter | EventHistogram:
        """The child of label value ``value``, made if new."""
        child = self.children.get(value)
        if child is None:
            child = EventCounter() if self.buckets is None else EventHistogram(self.buckets)
            self.children[str(value)] = child
        return child

    def collect(self) -> Iterator[Metric]:
        """The collector protocol: this one family."""
        yield self.to_metric()

    def to_metric(self) -> Metric:
        """The family as ``prometheus_client`` would export it."""
        names = [self.label] if self.label else []
        if self.buckets is None:
            family = CounterMetricFamily(self.name, self.doc, labels=names)
            for value, c in self.children.items():
                family.add_metric([value] if self.label else [], c.value,  # type: ignore[union-attr]
                                  created=c.created)
            return family
        hist = HistogramMetricFamily(self.name, self.doc, labels=names)
        for value, h in self.children.items():
            assert isinstance(h, EventHistogram)
            labels = [value] if self.label else []
            hist.add_metric(labels, h.cumulative(), h.sum)
            hist.samples.append(Sample(self.name + "_created", dict(zip(names, labels,
                                                                        strict=True)),
                                       h.created))
        return hist
