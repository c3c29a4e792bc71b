"""Fixtures for the tier tests: deterministic blocks and a helper that runs a child Python."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from asymcache.tiers.base import BlockHeader

REPO = Path(__file__).resolve().parents[2]
LAYOUT = "layers=2;kv_heads=2;head_dim=64;block=16;dtype=float16;tp=0/1"
NAMESPACE = bytes(range(16))


def block(i: int, nbytes: int = 64 * 1024) -> tuple[bytes, BlockHeader, bytes]:
    """Block ``i``: a 16-byte key, its header (checksum computed) and ``nbytes`` of seeded data."""
    payload = np.random.default_rng(i).integers(0, 256, nbytes, dtype=np.uint8).tobytes()
    key = i.to_bytes(16, "big")
    parent = (i - 1).to_bytes(16, "big") if i else bytes(16)
    return key, BlockHeader.describe(NAMESPACE, parent, i, LAYOUT, payload), payload


def run_child(code: str, **popen: object) -> subprocess.Popen:
    """Start ``python -c code`` with the repository importable; stdout is a text pipe."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finish(proc: subprocess.Popen, timeout: float = 60.0) -> tuple[str, str]:
    """Wait for a child started by :func:`run_child`: its (stdout, stderr); fails the test with
    the stderr if the child failed."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{err}"
    return out, err


@contextmanager
def held_write_lock(lmdb_dir: str) -> Iterator[Callable[[], None]]:
    """A child process holds LMDB's write transaction on the environment ``lmdb_dir`` (so a
    disk tier's writer thread stalls in its next commit) until the yielded ``release()`` is
    called or the block ends; the child is reaped either way."""
    child = run_child(f"""
        import sys
        import lmdb
        env = lmdb.open({lmdb_dir!r}, max_dbs=4, subdir=True, lock=True)
        txn = env.begin(write=True)
        print("locked", flush=True)
        sys.stdin.readline()
        txn.abort()
        env.close()
    """, stdin=subprocess.PIPE)

    released = []

    def release() -> None:
        if not released:
            released.append(True)
            child.stdin.write("go\n")
            child.stdin.flush()

    try:
        assert child.stdout.readline().strip() == "locked", child.stderr.read()
        yield release
    finally:
        release()
        finish(child)


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "disk")
