"""The OpenAI-compatible HTTP server, started for real (``asymcache engine``) on a loopback
port: replies, streaming, cached-token usage, metrics, and 4xx for bad requests."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.engine.engine_fixtures import COST, make_llm, wait_healthy

PROMPT = "The harbor town woke early, and the fishing boats went out before the sun rose over"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    port = _free_port()
    log = tmp_path_factory.mktemp("http") / "server.log"
    cmd = [sys.executable, "-m", "asymcache.ops.cli", "engine", "--port", str(port),
           "--cost-model", COST, "--num-gpu-blocks", "128", "--chunking", "fixed",
           "--chunk-tokens", "64", "--log-level", "warning"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def expected() -> str:
    llm = make_llm(reuse="none")
    from asymcache.engine.sampling import SamplingParams

    out = llm.generate(PROMPT, SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True))
    llm.close()
    return out[0].text


def _complete(url: str, **body) -> httpx.Response:
    return httpx.post(f"{url}/v1/completions", json=body, timeout=60)


def test_completion_equals_the_offline_engine_and_reports_cached_tokens(server, expected) -> None:
    body = {"model": "builtin", "prompt": PROMPT, "max_tokens": 12, "temperature": 0,
            "ignore_eos": True}
    first = _complete(server, **body).json()
    assert first["object"] == "text_completion"
    assert first["choices"][0]["text"] == expected
    assert first["choices"][0]["finish_reason"] == "length"
    prompt_tokens = first["usage"]["prompt_tokens"]
    assert first["usage"]["completion_tokens"] == 12
    second = _complete(server, **body).json()
    assert second["choices"][0]["text"] == expected
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached == (prompt_tokens - 1) // 16 * 16 > 0


def test_streaming_deltas_add_up_to_the_full_text(server, expected) -> None:
    body = {"prompt": PROMPT, "max_tokens": 12, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    events = _sse(f"{server}/v1/completions", body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == expected
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 12


def test_chat_completion_and_chat_streaming_agree(server) -> None:
    body = {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
            "max_tokens": 8, "temperature": 0, "ignore_eos": True}
    reply = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=60).json()
    assert reply["object"] == "chat.completion"
    message = reply["choices"][0]["message"]
    assert message["role"] == "assistant" and reply["usage"]["completion_tokens"] == 8
    events = _sse(f"{server}/v1/chat/completions", {**body, "stream": True})
    deltas = [json.loads(e)["choices"][0]["delta"] for e in events[:-1]]
    assert deltas[0]["role"] == "assistant"
    assert "".join(d.get("content", "") for d in deltas) == message["content"]


def test_batched_prompts_and_token_id_prompts(server) -> None:
    texts = _complete(server, prompt=["Once upon a time", "The kitchen"], max_tokens=3,
                      temperature=0).json()
    assert [c["index"] for c in texts["choices"]] == [0, 1]
    assert texts["usage"]["completion_tokens"] == 6
    ids = _complete(server, prompt=[[1, 300, 301, 302], [1, 5]], max_tokens=3).json()
    assert ids["usage"]["prompt_tokens"] == 6 and len(ids["choices"]) == 2
    one = _complete(server, prompt=[1, 300, 301, 302], max_tokens=3).json()
    assert one["usage"]["prompt_tokens"] == 4 and len(one["choices"]) == 1


@pytest.mark.parametrize(("body", "status", "says"), [
    (b'{"prompt": "x",', 400, "malformed JSON"),
    (b'["not", "an", "object"]', 400, "valid dictionary"),
    (b'{"prompt": "x", "bogus": 1}', 400, "bogus"),
    (b'{"prompt": "x", "max_tokens": 100000}', 400, "maximum context length"),
    (b'{"prompt": "x", "temperature": -1}', 400, "temperature"),
    (b'{"prompt": "x", "n": 2}', 400, "n=1"),
    (b'{"prompt": [], "max_tokens": 2}', 400, "prompt"),
    (b'{"prompt": [999999], "max_tokens": 2}', 400, "token ids"),
    (b'{"model": "gpt-4", "prompt": "x"}', 404, "does not exist"),
])
def test_bad_requests_get_4xx_and_the_server_keeps_serving(server, body, status, says) -> None:
    r = httpx.post(f"{server}/v1/completions", content=body, timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == status
    assert says in r.json()["error"]["message"]
    assert _complete(server, prompt="ok", max_tokens=2).status_code == 200


def test_models_health_and_metrics(server) -> None:
    models = httpx.get(f"{server}/v1/models", timeout=10).json()
    assert models["data"][0]["id"] == "builtin"
    assert httpx.get(f"{server}/health", timeout=10).json() == {"status": "ok"}
    _complete(server, prompt=PROMPT, max_tokens=2)
    _complete(server, prompt=PROMPT, max_tokens=2)  # the second finds the first's blocks
    text = httpx.get(f"{server}/metrics", timeout=10).text
    for name in ('asymcache_engine_prompt_tokens_total{source="resident"}',
                 'asymcache_engine_prompt_tokens_total{source="new"}',
                 "asymcache_engine_ttft_seconds_count", "asymcache_engine_tpot_seconds_count",
                 'asymcache_engine_kv_blocks{state="idle"}', "asymcache_engine_info{",
                 "asymcache_engine_overdue_steps_total"):
        assert name in text
    assert _sample(text, 'asymcache_engine_prompt_tokens_total{source="resident"}') > 0
    assert _sample(text, "asymcache_engine_overdue_steps_total") == 0  # fixed chunks: no deadline


def _sse(url: str, body: dict) -> list[str]:
    out = []
    with httpx.stream("POST", url, json=body, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                out.append(line[len("data: "):])
    return out


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_client_leaving_mid_stream_aborts_its_request(server) -> None:
    before = _sample(httpx.get(f"{server}/metrics", timeout=10).text,
                     'asymcache_engine_requests_total{finish_reason="abort"}')
    body = {"prompt": PROMPT, "max_tokens": 1500, "temperature": 0, "ignore_eos": True,
            "stream": True}
    with httpx.stream("POST", f"{server}/v1/completions", json=body, timeout=60) as r:
        next(r.iter_lines())  # one event, then hang up
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = httpx.get(f"{server}/metrics", timeout=10).text
        if _sample(text, 'asymcache_engine_requests_total{finish_reason="abort"}') > before:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the abandoned request was not aborted")
    assert _sample(text, 'asymcache_engine_requests{state="running"}') == 0
