"""The end-to-end benchmark behind ``asymcache bench e2e`` and ``asymcache demo``.

* ``workload.py`` — requests of token ids on a timeline, from a simulator trace; rescaling.
* ``sources.py`` — the chat, Mooncake-derived and agent workloads (and a small chat).
* ``configs.py`` — the configurations compared, and the tier sizes they share.
* ``driver.py`` — open-loop replay against an engine's step loop; per-request times.
* ``runner.py`` — one configuration: a fresh daemon and engine, warm-up, replay, stop.
* ``calibrate.py`` — the arrival rate for a target engine load; this machine's cost profile.
* ``summary.py`` — rows of figures, and the check that outputs equal the no-cache run's.
* ``predict.py`` — the simulator's prediction for the same prompts and tier sizes.
* ``experiment.py`` — one workload end to end; the goal ratios.
* ``report.py``, ``output.py`` — tables, Markdown, JSON and the PNG.
"""
