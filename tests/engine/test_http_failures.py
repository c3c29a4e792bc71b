"""The HTTP server when things go wrong, over real HTTP to an in-process server: the engine
dying mid-stream."""

from __future__ import annotations

import json

import httpx

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

