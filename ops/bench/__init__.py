"""One module per ``asymcache bench`` benchmark (same contract as ``ops/commands``)."""
