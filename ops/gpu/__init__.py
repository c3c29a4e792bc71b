"""The GPU check (issue 20, docs/gpu.md): one prepared script for a short session on one GPU.

- ``check.sh`` — the entry point: installs the working tree with the carried wheels, then runs
  ``check.py``; ``--cpu-rehearsal`` runs every step's plumbing on this CPU.
- ``fetch_wheels.sh``, ``requirements.txt``, ``wheels.py`` — what the GPU image lacks, its
  download as CPython 3.12 manylinux wheels, and the checks that they cover ``pyproject.toml``.
- ``check.py`` — the driver: each step in a process of its own under its time bound, then
  ``summary.json`` and the summary table; ``results.py`` (records, goals, the table) and
  ``context.py`` (a step's deadline, bounded subprocesses).
- ``step_env.py``, ``step_pinned.py``, ``step_kernel_tests.py`` (with ``kernel_grid.py``),
  ``step_bench_kernels.py``, ``step_engine.py`` (with ``llama_shaped.py``), ``step_e2e.py`` —
  the steps, in the order they run.
"""
