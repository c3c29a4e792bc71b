"""The drain route and resume field over real HTTP, in process (a gated engine): a drain ends a
running request with its tokens and refuses new ones; a resumed request is validated."""

from __future__ import annotations

import threading

import httpx

from tests.engine.http_inprocess import serve_in_process

PROMPT = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]


def test_drain_ends_requests_with_their_tokens_and_refuses_new_ones() -> None:
    with serve_in_process() as s:
        got: dict = {}
        body = {"prompt": PROMPT, "max_tokens": 200, "temperature": 0, "ignore_eos": True}
        t = threading.Thread(target=lambda: got.update(r=httpx.post(
            f"{s.url}/v1/completions", json=body, timeout=60)))
        t.start()
        while not s.engine.engine.scheduler.running or \
                not s.engine.engine.scheduler.running[0].output_token_ids:
            threading.Event().wait(0.01)
        drained = httpx.post(f"{s.url}/v1/admin/drain", json={"deadline_s": 2}, timeout=30)
        assert drained.status_code == 200, drained.text
        assert drained.json()["drained_requests"] == 1
        t.join(30)
        err = got["r"].json()["error"]
        assert got["r"].status_code == 503 and err["type"] == "engine_draining"
        assert err["token_ids"] and err["choices"][0]["token_ids"] == err["token_ids"]
        health = httpx.get(f"{s.url}/health", timeout=10)
        assert health.status_code == 503 and health.json() == {"status": "draining"}
        late = httpx.post(f"{s.url}/v1/completions", json=body, timeout=10)
        assert late.status_code == 503 and late.headers["retry-after"] == "1"
        assert late.json()["error"]["token_ids"] == []
        bad = httpx.post(f"{s.url}/v1/admin/drain", json={"deadline_s": -1}, timeout=10)
        assert bad.status_code == 400


def test_resume_token_ids_are_checked() -> None:
    with serve_in_process() as s:
        url = f"{s.url}/v1/completions"
        two = httpx.post(url, json={"prompt": [PROMPT, PROMPT], "max_tokens": 4,
                                    "resume_token_ids": [3]}, timeout=30)
        assert two.status_code == 400 and "one prompt" in two.json()["error"]["message"]
        far = httpx.post(url, json={"prompt": PROMPT, "max_tokens": 2,
                                    "resume_token_ids": [3, 4]}, timeout=30)
        assert far.status_code == 400
        assert far.json()["error"]["param"] == "resume_token_ids"
        ok = httpx.post(url, json={"prompt": PROMPT, "max_tokens": 4, "temperature": 0,
                                   "ignore_eos": True, "resume_token_ids": [3]}, timeout=30)
        assert ok.status_code == 200
        assert ok.json()["usage"] == {**ok.json()["usage"], "completion_tokens": 3,
                                      "prompt_tokens": len(PROMPT) + 1}
