"""The trace simulator behind ``asymcache simulate``: traces, tiers, replay, report.

It drives the very policy objects of ``cacheserver/policy`` that the daemon runs, so every
claim about a policy is a measured replay (see docs/policy.md).
"""

from asymcache.ops.sim import belady as _belady  # noqa: F401 - registers belady
from asymcache.ops.sim import oracles as _oracles  # noqa: F401 - registers the other oracles
