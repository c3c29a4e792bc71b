"""Storage tiers for block bytes (CPU shared memory, LMDB disk, remote). See ``tiers.base``."""
