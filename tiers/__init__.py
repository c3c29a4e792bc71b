"""Storage tiers for block bytes, one interface (``tiers.base.Tier``), chosen by name.

``base`` the Tier ABC, ``BlockHeader`` and the registry; ``codec`` the stored value format
(header + payload) shared by the disk and remote tiers; ``cpu`` and ``shm`` the shared-memory
slab tier and ``attach`` for other processes; ``disk`` (with ``disk_config``, ``disk_writer``,
``lmdb_store``) the LMDB tier; ``remote`` (with ``remote_config``, ``remote_link``,
``remote_resp``, ``remote_writer``, ``remote_accounts``, ``remote_probe``) the Redis Cluster
tier and ``remote_local`` a throwaway local cluster for tests and benchmarks.
"""
