"""The trace simulator behind ``asymcache simulate``: traces, tiers, replay, report.

It drives the very policy objects of ``cacheserver/policy`` that the daemon runs, so every
claim about a policy is a measured replay (see docs/policy.md).
"""
