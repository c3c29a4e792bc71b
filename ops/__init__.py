"""Operations: the ``asymcache`` CLI, the trace simulator, benchmarks and profiling."""
