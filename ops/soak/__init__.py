"""``asymcache soak``: mixed load from four engines of two tenants while faults are injected.

* ``config.py`` — :class:`SoakConfig` (duration, sizes, limits) and the fault schedule;
* ``prompts.py`` — the prompt pool (shared, private and twin prompts) and its no-cache
  references, top-1 margins checked;
* ``feeder.py`` — more prompts with references while the load runs;
* ``tenancy.py`` — what each tenant has sent, block by block: the cross-tenant hit check;
* ``procs.py`` — engine server processes (``asymcache engine``), metrics scrapes, ``/proc``
  figures;
* ``stack.py`` — the daemon, the engines and the Redis Cluster of one run, and restarts;
* ``load.py`` — client threads: requests, output comparison, records;
* ``probe.py`` — a registered probe client for the faults that need one;
* ``faults.py`` / ``faults_data.py`` — the process faults and the data faults, each measured;
* ``monitor.py`` — daemon RSS, fds and threads over time, progress lines;
* ``report.py`` / ``plot.py`` — the JSON summary, the table and the PNG;
* ``harness.py`` — one run from set-up to teardown.
"""
