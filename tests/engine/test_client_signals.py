"""Client signals from the HTTP API to the cache daemon: OpenAI's ``prompt_cache_key`` and
``prompt_cache_retention`` (checked, 400 naming the field otherwise), the engine's caps per
tenant, one SIGNAL per finished request that a real daemon records on its blocks,
``POST /v1/prompt_cache/end`` that puts the session in the daemon's book, a daemon outage that
fails nothing, and outputs that do not change.

The daemon runs in this process (on the test's event loop, as ``tests/cacheserver/inprocess.py``
does, sized for the built-in model's 32 KiB blocks) so the test can read what it recorded: the
protocol has no op that shows a block's signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from asymcache.cacheserver.blocks import session_digest
from asymcache.cacheserver.server import CacheServer
from asymcache.engine.client import DaemonUnavailable
from asymcache.engine.config import EngineConfig
from asymcache.engine.sampling import SamplingParams
from asymcache.engine.server.api_keys import ApiKeys, KeyFileError
from asymcache.engine.server.app import ServerContext, create_app
from tests.cacheserver.inprocess import serving, until
from tests.engine.http_inprocess import Served, serve_in_process

PROMPT = ("The harbor town woke early, and the fishing boats went out before the sun rose over "
          "the hills, while the old lighthouse keeper watched them go one by one into the grey "
          "morning and wrote their names in a book that nobody else ever read")
KEY = "chat-session-42"
KEY_A = "sk-tenant-a-0123456789abcdef"
SALT_A = "salt-of-a"
BLOCK = 16  # tokens per block (EngineConfig default)


# ---- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """An engine server without a daemon."""
    with serve_in_process() as s:
        yield s


def daemon_on_loop(tmp_path: Path) -> contextlib.AbstractAsyncContextManager[CacheServer]:
    """A real daemon on this event loop, its CPU slots sized for the built-in model."""
    return serving(tmp_path, cpu_bytes=4 << 20, cpu_slot_bytes=32 << 10, disk_bytes=16 << 20,
                   disk_map_bytes=64 << 20, lease_timeout_s=30.0, log_level="warning")


def _complete(url: str, **extra: Any) -> httpx.Response:
    body = {"prompt": PROMPT, "max_tokens": 4, "temperature": 0, "ignore_eos": True, **extra}
    return httpx.post(f"{url}/v1/completions", json=body, timeout=60)


def _text(resp: httpx.Response) -> str:
    assert resp.status_code == 200, resp.text
    return resp.json()["choices"][0]["text"]


def _session_records(server: CacheServer, session: bytes) -> list:
    return [r for r in server.ctx.index.records() if r.session == session]


# ---- values and settings ----------------------------------------------------------------------
def test_sampling_params_read_the_openai_retention_names_and_name_bad_fields() -> None:
    assert SamplingParams(prompt_cache_retention="24h").prompt_cache_retention == 86400.0
    assert SamplingParams(prompt_cache_retention="in-memory").prompt_cache_retention == 0.0
    assert SamplingParams(prompt_cache_retention=90).prompt_cache_retention == 90.0
    for bad in ("1h", -1.0, float("inf"), True):
        with pytest.raises(ValueError, match=r"SamplingParams\.prompt_cache_retention"):
            SamplingParams(prompt_cache_retention=bad)
    for bad in ("", "k" * 257, "\ud800", 7):
        with pytest.raises(ValueError, match=r"SamplingParams\.prompt_cache_key"):
            SamplingParams(prompt_cache_key=bad)


@pytest.mark.parametrize("field", ["max_retention_s", "max_pin_ttl_s"])
@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), "60", True])
def test_bad_caps_fail_at_start_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"EngineConfig.{field}"):
        EngineConfig(**{field: value})


def test_the_api_keys_file_gives_a_tenant_its_own_caps(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    entry = {"tenant": "a", "cache_salt": SALT_A, "max_retention_s": 600, "max_pin_ttl_s": 0}
    path.write_text(json.dumps({KEY_A: entry, "sk-tenant-b-0123456789abcdef":
                                {"tenant": "b", "cache_salt": "salt-of-b"}}))
    keys = ApiKeys(path)
    assert keys.time_caps(SALT_A) == {"max_retention_s": 600.0, "max_pin_ttl_s": 0.0}
    assert keys.time_caps("salt-of-b") == {}  # the engine's caps apply
    bad = [({**entry, "max_retention_s": -5}, "max_retention_s"),
           ({"admin": True, "max_pin_ttl_s": 5}, "max_pin_ttl_s")]
    for value, field in bad:
        path.write_text(json.dumps({KEY_A: value}))
        with pytest.raises(KeyFileError, match=field):
            ApiKeys(path)
    other = {**entry, "max_retention_s": 60}  # a second key of tenant a with another cap
    path.write_text(json.dumps({KEY_A: entry, "sk-tenant-a-second-0123456789": other}))
    with pytest.raises(KeyFileError, match="one value per tenant"):
        ApiKeys(path)


# ---- HTTP --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("route", "body", "field"), [
    ("completions", {"prompt_cache_retention": "forever"}, "prompt_cache_retention"),
    ("completions", {"prompt_cache_retention": 0}, "prompt_cache_retention"),
    ("completions", {"prompt_cache_retention": -3}, "prompt_cache_retention"),
    ("completions", {"prompt_cache_retention": True}, "prompt_cache_retention"),
    ("completions", {"prompt_cache_retention": float("inf")}, "prompt_cache_retention"),
    ("chat/completions", {"prompt_cache_retention": "1h"}, "prompt_cache_retention"),
    ("completions", {"prompt_cache_key": ""}, "prompt_cache_key"),
    ("completions", {"prompt_cache_key": "é" * 129}, "prompt_cache_key"),
    ("chat/completions", {"prompt_cache_key": 42}, "prompt_cache_key"),
    ("prompt_cache/end", {}, "prompt_cache_key"),
    ("prompt_cache/end", {"prompt_cache_key": "k" * 257}, "prompt_cache_key"),
    ("prompt_cache/end", {"prompt_cache_key": KEY, "cache_salt": "s" * 300}, "cache_salt"),
])
def test_bad_prompt_cache_values_get_400_naming_the_field(served, route, body, field) -> None:
    if route == "completions":
        body = {"prompt": PROMPT, "max_tokens": 1, **body}
    elif route == "chat/completions":
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, **body}
    resp = httpx.post(f"{served.url}/v1/{route}", content=json.dumps(body),  # Infinity too
                      headers={"Content-Type": "application/json"}, timeout=60)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert field in error["message"] and error["param"] == field


def test_the_documented_values_are_accepted_without_a_daemon(served) -> None:
    for retention in ("in_memory", "in-memory", "24h", 30, 2.5, None):
        _text(_complete(served.url, max_tokens=1, prompt_cache_key=KEY,
                        prompt_cache_retention=retention))
    resp = httpx.post(f"{served.url}/v1/prompt_cache/end", json={"prompt_cache_key": KEY},
                      timeout=60)
    assert resp.status_code == 200 and resp.json() == {"prompt_cache_key": KEY, "ended": True}


def test_ending_a_session_needs_an_api_key_and_runs_with_the_tenants_salt(served,
                                                                          tmp_path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({KEY_A: {"tenant": "a", "cache_salt": SALT_A}}))
    engine = served.engine
    ctx = ServerContext(engine, engine.engine.tokenizer, "builtin", CollectorRegistry(),
                        engine.engine.max_model_len, keys=ApiKeys(path))
    with TestClient(create_app(ctx)) as client:
        body = {"prompt_cache_key": KEY}
        assert client.post("/v1/prompt_cache/end", json=body).status_code == 401
        auth = {"Authorization": f"Bearer {KEY_A}"}
        resp = client.post("/v1/prompt_cache/end", json=body, headers=auth)
        assert resp.status_code == 200 and resp.json()["ended"] is True
        own = client.post("/v1/prompt_cache/end", json={**body, "cache_salt": SALT_A},
                          headers=auth)
        assert own.status_code == 200
        other = client.post("/v1/prompt_cache/end", json={**body, "cache_salt": "x"},
                            headers=auth)
        assert other.status_code == 403


# ---- a real daemon ----------------------------------------------------------------------------
def test_signals_reach_the_daemon_capped_and_change_no_output(tmp_path) -> None:
    """Plain request, then the same with a session key, "24h" and a long pin: equal text; the
    daemon's records of the request's blocks carry the session digest, a retention capped at
    the engine's 60 s (a tenant's own cap: 30 s) and a pin capped at 120 s; an end puts the
    session in the daemon's book; signals failing, or the daemon gone, fail no request."""

    async def scenario() -> None:
        async with daemon_on_loop(tmp_path) as server:
            with contextlib.ExitStack() as stack:
                s = await asyncio.to_thread(stack.enter_context, serve_in_process(
                    cache_endpoint=server.config.endpoint, daemon_timeout_s=0.5,
                    max_retention_s=60, max_pin_ttl_s=120))
                try:
                    await _check_signals(server, s)
                finally:
                    await asyncio.to_thread(stack.close)

    asyncio.run(scenario())


async def _check_signals(server: CacheServer, s: Served) -> None:
    kv = s.engine.engine.kv
    blocks = len(s.engine.engine.tokenizer.encode(PROMPT)) // BLOCK
    plain = _text(await asyncio.to_thread(_complete, s.url))
    signalled = await asyncio.to_thread(_complete, s.url, prompt_cache_key=KEY,
                                        prompt_cache_retention="24h", pin_ttl_s=100000)
    assert _text(signalled) == plain
    session = session_digest("", KEY)
    await until(lambda: len(_session_records(server, session)) >= blocks, 10.0)
    now = time.monotonic()
    for rec in _session_records(server, session):
        assert 50.0 < rec.retain_until - now <= 60.0  # "24h" capped at max_retention_s
        assert rec.pinned and 110.0 < rec.pin_until - now <= 120.0  # at max_pin_ttl_s

    kv.tenancy.tenant_caps = lambda salt: {"max_retention_s": 30.0} if salt == "tenant-t" else {}
    tenant = await asyncio.to_thread(_complete, s.url, cache_salt="tenant-t",
                                     prompt_cache_key=KEY, prompt_cache_retention=86400)
    assert _text(tenant) == plain
    theirs = session_digest("tenant-t", KEY)
    assert theirs != session  # two tenants' equal keys are two sessions
    await until(lambda: len(_session_records(server, theirs)) >= blocks, 10.0)
    now = time.monotonic()
    assert all(20.0 < r.retain_until - now <= 30.0 for r in _session_records(server, theirs))

    end = await asyncio.to_thread(httpx.post, f"{s.url}/v1/prompt_cache/end",
                                  json={"prompt_cache_key": KEY}, timeout=60)
    assert end.status_code == 200 and end.json() == {"prompt_cache_key": KEY, "ended": True}
    await until(lambda: server.ctx.residency.chain.sessions.is_ended(session), 10.0)
    assert not server.ctx.residency.chain.sessions.is_ended(theirs)

    await _check_outages(server, s, plain)


async def _check_outages(server: CacheServer, s: Served, plain: str) -> None:
    link = s.engine.engine.kv.link
    assert link is not None

    def refuse(*_: object, **__: object) -> None:
        raise DaemonUnavailable("the daemon went away while signalling")

    errors = link.errors
    link.client.signal = refuse  # type: ignore[method-assign]
    try:
        failing = await asyncio.to_thread(_complete, s.url, prompt_cache_key="other",
                                          prompt_cache_retention=5)
        assert _text(failing) == plain
        assert link.errors > errors  # counted, as every daemon failure
    finally:
        del link.client.signal
    server.request_stop()  # the daemon is gone for good
    gone = await asyncio.to_thread(_complete, s.url, prompt_cache_key=KEY,
                                   prompt_cache_retention="24h")
    assert _text(gone) == plain
    end = await asyncio.to_thread(httpx.post, f"{s.url}/v1/prompt_cache/end",
                                  json={"prompt_cache_key": KEY}, timeout=60)
    assert end.status_code == 200
