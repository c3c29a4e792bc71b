"""API keys of the HTTP server (``--api-keys-file``), started for real (``asymcache engine``
with a daemon) on a loopback port: who gets in, which ``cache_salt`` a request runs with, admin
routes, key rotation while running, and a bad file at start."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from asymcache.engine.config import EngineConfig
from asymcache.engine.server.api_keys import ApiKeys, KeyFileError
from asymcache.engine.server.serve import open_keys
from tests.daemons import ENGINE, DaemonFactory
from tests.engine.engine_fixtures import COST, wait_healthy

PROMPT = ("The lighthouse keeper counted the ships that passed the point each night and wrote "
          "their names in a book that nobody else ever read, year after year after year")
KEY_A = "sk-tenant-a-0123456789abcdef"
KEY_B = "sk-tenant-b-0123456789abcdef"
KEY_ADMIN = "sk-admin-0123456789abcdef"
KEYS = {KEY_A: {"tenant": "a", "cache_salt": "salt-of-a"},
        KEY_B: {"tenant": "b", "cache_salt": "salt-of-b"},
        KEY_ADMIN: {"admin": True}}
ROTATION_LIMIT_S = 5.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_keys(path: Path, keys: dict | str) -> None:
    """Replace the file at once (written aside, then renamed), as an operator rotating keys."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(keys if isinstance(keys, str) else json.dumps(keys))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _engine_cmd(port: int, keys_file: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "asymcache.ops.cli", "engine", "--port", str(port),
            "--cost-model", COST, "--num-gpu-blocks", "128", "--chunking", "fixed",
            "--chunk-tokens", "64", "--log-level", "warning", "--api-keys-file", str(keys_file),
            *extra]


class Server:
    def __init__(self, url: str, proc: subprocess.Popen, keys_file: Path) -> None:
        self.url, self.proc, self.keys_file = url, proc, keys_file


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("http_keys")
    keys_file = tmp / "keys.json"
    _write_keys(keys_file, KEYS)
    port = _free_port()
    log = tmp / "server.log"
    with DaemonFactory(tmp, ENGINE) as daemons:
        daemons.start()
        with open(log, "wb") as out:
            cmd = _engine_cmd(port, keys_file, "--cache-endpoint", daemons.endpoint)
            proc = subprocess.Popen(cmd, stdout=out, stderr=out)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, proc, log)
            yield Server(url, proc, keys_file)
        finally:
            proc.terminate()
            proc.wait(30)


def _auth(key: str | None) -> dict[str, str]:
    return {} if key is None else {"Authorization": f"Bearer {key}"}


def _complete(url: str, key: str | None, **extra) -> httpx.Response:
    body = {"prompt": PROMPT, "max_tokens": 4, "temperature": 0, "ignore_eos": True, **extra}
    return httpx.post(f"{url}/v1/completions", json=body, headers=_auth(key), timeout=60)


def _cached(reply: httpx.Response) -> int:
    assert reply.status_code == 200, reply.text
    return reply.json()["usage"]["prompt_tokens_details"]["cached_tokens"]


def _error(reply: httpx.Response, status: int, code: str) -> str:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["code"] == code
    return error["message"]


def test_a_request_without_a_key_gets_401_with_the_reason(server) -> None:
    reply = _complete(server.url, None)
    assert "Authorization: Bearer" in _error(reply, 401, "missing_api_key")
    assert reply.headers["WWW-Authenticate"] == "Bearer"
    models = httpx.get(f"{server.url}/v1/models", timeout=10)
    assert models.status_code == 401
    bad_json = httpx.post(f"{server.url}/v1/completions", content=b"{not json", timeout=10)
    assert bad_json.status_code == 401  # the key is checked before the body is read


def test_an_unknown_key_or_scheme_gets_401(server) -> None:
    assert "unknown API key" in _error(_complete(server.url, "sk-not-a-key-000000000"), 401,
                                       "invalid_api_key")
    basic = httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Basic {KEY_A}"},
                      timeout=10)
    assert "Bearer" in _error(basic, 401, "invalid_api_key")


def test_health_and_metrics_need_no_key(server) -> None:
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
    assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 200


def test_each_tenant_runs_with_its_keys_salt(server) -> None:
    prompt = "Salts. " + PROMPT
    assert _cached(_complete(server.url, KEY_A, prompt=prompt)) == 0
    assert _cached(_complete(server.url, KEY_A, prompt=prompt)) > 0  # a's own prefix
    assert _cached(_complete(server.url, KEY_B, prompt=prompt)) == 0  # b's salt: none of a's
    # a body naming the key's own salt is allowed, and lands in the same namespace
    assert _cached(_complete(server.url, KEY_B, prompt=prompt, cache_salt="salt-of-b")) > 0


def test_a_tenant_key_streams(server) -> None:
    body = {"prompt": "Streams. " + PROMPT, "max_tokens": 3, "temperature": 0, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}
    reply = httpx.post(f"{server.url}/v1/completions", json=body, headers=_auth(KEY_A),
                       timeout=60)
    assert reply.status_code == 200, reply.text
    events = [line for line in reply.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and '"usage"' in events[-2]


def test_a_body_cache_salt_other_than_the_keys_gets_403(server) -> None:
    prompt = "Stolen salt. " + PROMPT
    for salt in ("salt-of-a", ""):
        reply = _complete(server.url, KEY_B, prompt=prompt, cache_salt=salt)
        assert "cache_salt is bound to the API key" in _error(reply, 403,
                                                              "cache_salt_not_allowed")
        assert salt == "" or "salt-of-a" not in reply.text
    chat = httpx.post(f"{server.url}/v1/chat/completions", headers=_auth(KEY_B), timeout=60,
                      json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
                            "cache_salt": "salt-of-a"})
    _error(chat, 403, "cache_salt_not_allowed")


def test_admin_routes_need_an_admin_key(server) -> None:
    _error(httpx.get(f"{server.url}/v1/admin/keys", headers=_auth(KEY_A), timeout=10), 403,
           "admin_key_required")
    reply = httpx.get(f"{server.url}/v1/admin/keys", headers=_auth(KEY_ADMIN), timeout=10)
    assert reply.status_code == 200, reply.text
    summary = reply.json()
    assert summary["tenants"] == ["a", "b"] and summary["admin_keys"] == 1
    assert KEY_A not in reply.text and "salt-of-a" not in reply.text
    # an admin key without a tenant has no salt to generate with
    _error(_complete(server.url, KEY_ADMIN), 403, "tenant_key_required")


def test_sighup_reads_the_keys_again_and_does_not_stop_the_server(server) -> None:
    server.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert server.proc.poll() is None
    assert httpx.get(f"{server.url}/v1/models", headers=_auth(KEY_A), timeout=10).status_code \
        == 200


def _wait_for(check, limit_s: float = ROTATION_LIMIT_S) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < limit_s, "the key file's change was not taken up"
        time.sleep(0.1)
    return time.monotonic() - start


def test_rotated_keys_take_effect_while_running_and_a_bad_file_keeps_the_old(server) -> None:
    key_a2 = "sk-tenant-a-rotated-fedcba9876543210"

    def status(key: str) -> int:
        return httpx.get(f"{server.url}/v1/models", headers=_auth(key), timeout=10).status_code

    rotated = {k: v for k, v in KEYS.items() if k != KEY_A}
    rotated[key_a2] = KEYS[KEY_A]
    _write_keys(server.keys_file, rotated)
    _wait_for(lambda: status(key_a2) == 200)
    assert status(KEY_A) == 401  # removed: refused
    assert _cached(_complete(server.url, key_a2, prompt="Salts. " + PROMPT)) > 0  # a's salt

    _write_keys(server.keys_file, '{"sk-short": {"tenant": "x"}')  # malformed
    admin = {"Authorization": f"Bearer {KEY_ADMIN}"}

    def last_error() -> str | None:
        return httpx.get(f"{server.url}/v1/admin/keys", headers=admin, timeout=10).json()[
            "last_error"]

    _wait_for(lambda: last_error() is not None)
    assert str(server.keys_file) in last_error()
    assert status(key_a2) == 200 and status(KEY_A) == 401  # the old keys stay in force


def test_a_malformed_key_file_stops_the_start_naming_the_file(tmp_path) -> None:
    keys_file = tmp_path / "keys.json"
    _write_keys(keys_file, "{not json")
    run = subprocess.run(_engine_cmd(_free_port(), keys_file), capture_output=True, text=True,
                         timeout=60, check=False)
    assert run.returncode != 0
    assert f"asymcache engine: api_keys_file {keys_file}: Expecting property name" in run.stderr


@pytest.mark.parametrize(("entries", "names"), [
    ({"sk-good-key-0123456789": {"tenant": "a", "cache_salt": "s"},
      "sk-bad-key-0123456789": {"tenant": "b"}}, ["entry 2 (key sk-b...)", "cache_salt"]),
    ({"short": {"admin": True}}, ["entry 1", "16 to 512"]),
    ({"sk-one-key-0123456789": {"tenant": "a", "cache_salt": "s"},
      "sk-two-key-0123456789": {"tenant": "a", "cache_salt": "t"}}, ["entry 2", "one salt"]),
    ({"sk-one-key-0123456789": {"admin": "yes"}}, ["entry 1", "admin must be true or false"]),
    ({"sk-one-key-0123456789": {"tenant": "a", "cache_salt": "s", "quota": 3}}, ["entry 1"]),
    ({}, ["at least one key"]),
])
def test_a_bad_entry_is_named_with_the_file(tmp_path, entries, names) -> None:
    keys_file = tmp_path / "keys.json"
    _write_keys(keys_file, entries)
    with pytest.raises(KeyFileError) as refused:
        ApiKeys(keys_file)
    assert str(refused.value).startswith(f"api_keys_file {keys_file}")
    assert all(name in str(refused.value) for name in names), str(refused.value)


def test_a_key_given_twice_is_refused(tmp_path) -> None:
    keys_file = tmp_path / "keys.json"
    entry = '{"tenant": "a", "cache_salt": "s"}'
    _write_keys(keys_file, f'{{"sk-one-key-0123456789": {entry}, '
                           f'"sk-one-key-0123456789": {entry}}}')
    with pytest.raises(KeyFileError, match="appears twice"):
        ApiKeys(keys_file)


def test_a_server_reachable_from_other_hosts_without_keys_warns(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        assert open_keys(EngineConfig(), "127.0.0.1") is None
        assert not caplog.records
        assert open_keys(EngineConfig(), "0.0.0.0") is None
    assert "needs no API key" in caplog.text and "api_keys_file" in caplog.text
