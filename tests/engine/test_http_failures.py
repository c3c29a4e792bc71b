"""The HTTP server when things go wrong, over real HTTP to an in-process server: the engine
dying mid-stream, too many prompts in one request, and a full waiting queue."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from asymcache.engine.config import EngineConfig
from asymcache.engine.server.openai_schema import MAX_PROMPTS
from tests.engine.http_inprocess import serve_in_process

PROMPT = "The harbor town woke early, and the fishing boats went out before the sun rose over"


def _events(url: str, body: dict) -> list[str]:
    out = []
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                out.append(line[len("data: "):])
    return out


def test_a_stream_ends_with_an_error_event_and_done_when_the_engine_dies_mid_stream() -> None:
    def fail_at_step_3(n: int) -> None:
        if n == 3:
            raise RuntimeError("injected step failure")

    with serve_in_process(step_hook=fail_at_step_3) as s:
        body = {"prompt": PROMPT, "max_tokens": 40, "temperature": 0, "ignore_eos": True,
                "stream": True}
        events = _events(s.url, body)  # before the fix: no end (read timeout)
        assert events[-1] == "[DONE]"
        error = json.loads(events[-2])["error"]
        assert error["type"] == "server_error"
        assert "injected step failure" in error["message"]
        tokens = [json.loads(e)["choices"][0] for e in events[:-2]]
        assert len(tokens) == 3 and all(c["finish_reason"] is None for c in tokens)
        assert httpx.get(f"{s.url}/health", timeout=10).status_code == 503
        late = httpx.post(f"{s.url}/v1/completions", json=body, timeout=10)
        assert late.status_code == 503 and "engine stopped" in late.json()["error"]["message"]


def test_too_many_prompts_in_one_request_get_400_with_the_limit() -> None:
    with serve_in_process() as s:
        r = httpx.post(f"{s.url}/v1/completions", timeout=30,
                       json={"prompt": ["x"] * (MAX_PROMPTS + 1), "max_tokens": 1})
        assert r.status_code == 400
        assert f"at most {MAX_PROMPTS} per request" in r.json()["error"]["message"]
        ok = httpx.post(f"{s.url}/v1/completions", timeout=30,
                        json={"prompt": ["x"] * 2, "max_tokens": 1})
        assert ok.status_code == 200 and len(ok.json()["choices"]) == 2


def test_a_full_waiting_queue_gets_429_with_the_reason_then_serves_again() -> None:
    body = {"prompt": PROMPT, "max_tokens": 2, "temperature": 0, "ignore_eos": True}
    with serve_in_process(max_waiting_requests=2) as s, ThreadPoolExecutor(2) as pool:
        s.gate.clear()  # the engine's steps stand still: submitted requests keep waiting
        held = [pool.submit(httpx.post, f"{s.url}/v1/completions", json=body, timeout=60)
                for _ in range(2)]
        deadline = time.monotonic() + 30
        while s.engine.num_waiting < 2:
            assert time.monotonic() < deadline, "the two requests never reached the engine"
            time.sleep(0.02)
        r = httpx.post(f"{s.url}/v1/completions", json=body, timeout=30)
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["message"] == (
            "2 requests are waiting to start (max_waiting_requests=2); retry later")
        s.gate.set()
        assert [f.result(60).status_code for f in held] == [200, 200]
        assert httpx.post(f"{s.url}/v1/completions", json=body, timeout=30).status_code == 200


def test_max_waiting_requests_is_checked_at_start_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"EngineConfig\.max_waiting_requests must be a positive"):
        EngineConfig(max_waiting_requests=0)
