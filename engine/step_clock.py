"""Online correction of the cost model's step-time estimates, from the steps the engine ran.

The adaptive chunker sizes prefill chunks with the cost model's estimate of a step's seconds.
That model is measured once (``asymcache profile``) and is often far from the truth the engine
then sees: on a shared CPU the same model ran its steps at 0.3× to 2× of its profile's
estimate depending on threads and neighbours, and a step's wall time also holds work the model
does not price (sampling, the daemon's notifications). A chunker that trusts the profile then
misses its step-time objective both ways: chunks of 30 tokens where 200 fit (TTFT lost for
nothing), or steps twice the objective (the TPOT it exists to protect).

:class:`StepClock` keeps two factors, each a running geometric mean of measured over estimated:

* ``fixed`` for the part of a step every step pays (the pass and its decodes), learned from
  steps that carry no prefill work worth a tenth of it;
* ``work`` for prefill tokens, learned from the other steps after taking off their fixed part.

Each observation moves a factor by a share ``alpha`` of its log distance to the observed ratio;
an observation is first clamped to within ``CLAMP``× of the current factor (a garbage-collection
pause or a stalled neighbour does not throw a factor, while a real shift is still learned over a
few dozen steps), and the factors stay within ``[1/LIMIT, LIMIT]``.
"""

from __future__ import annotations

import math

CLAMP = 4.0
LIMIT = 16.0


class StepClock:
    """Measured-over-estimated factors for a step's fixed part and its prefill work."""

    def __init__(self, alpha: float = 0.05) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self._log_fixed = 0.0
        self._log_work = 0.0
        self.observed = 0

    @property
    def fixed(self) -> float:
        return math.exp(self._log_fixed)

    @property
    def work(self) -> float:
        return math.exp(self._log_work)

    def seconds(self, est_fixed: float, est_work: float) -> float:
        """The corrected estimate of a step the cost model prices at these two parts."""
        return self.fixed * est_fixed + self.work * est_work

    def observe(self, est_fixed: float, est_work: float, seconds: float) -> None:
        """Learn from one step: the cost model's two estimates and its measured wall time."""
        if seconds <= 0 or est_fixed < 0 or est_work < 0 or est_fixed + est_work <= 0:
            return
        self.observed += 1
        if est_work <= 0.1 * est_fixed:
            self._log_fixed = self._moved(self._log_fixed, seconds / est_fixed)
            return
        rest = seconds - self.fixed * est_fixed
        if rest > 0:
            self._log_work = self._moved(self._log_work, rest / est_work)

    def _moved(self, current: float, ratio: float) -> float:
        seen = min(current + math.log(CLAMP), max(current - math.log(CLAMP), math.log(ratio)))
        out = current + self.alpha * (seen - current)
        return min(math.log(LIMIT), max(-math.log(LIMIT), out))
