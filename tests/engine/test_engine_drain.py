"""Drain on notice and resume elsewhere (docs/engine.md, "Drain and resume"), for real: two
hosts (a daemon each, sharing a three-node Redis Cluster), an engine server on each.

The engine on host A is SIGTERMed while it generates a streamed and a non-streamed request
(deadline 5 s); it writes their KV through daemon A to the cluster, ends both with resumable
``engine_draining`` errors and exits; daemon A is then killed. The requests resumed on host B
produce exactly the tokens of an uninterrupted no-cache run (margins asserted), and their
``cached_tokens`` cover every block the drain flushed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from asymcache.engine.client import CacheClient
from asymcache.engine.resume import ResumingClient
from asymcache.ops.bench.redis_cluster import LocalRedisCluster
from tests.daemons import ENGINE
from tests.engine.engine_fixtures import (
    COST,
    corpus_ids,
    greedy,
    make_llm,
    reference,
    wait_healthy,
)
from tests.engine.test_http_keys import _free_port
from tests.redis_cluster import unique_prefix, wait_until

LEN, OUT, B = 150, 120, 16


def _engine(tmp: Path, name: str, endpoint: str) -> tuple[str, subprocess.Popen]:
    port, log = _free_port(), tmp / f"engine-{name}.log"
    cmd = [sys.executable, "-m", "asymcache.ops.cli", "engine", "--port", str(port),
           "--cost-model", COST, "--num-gpu-blocks", "128", "--chunking", "fixed",
           "--chunk-tokens", "64", "--log-level", "info", "--cache-endpoint", endpoint,
           "--drain-timeout-s", "5"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc, log)
    return url, proc


def _host(start, cluster: LocalRedisCluster, prefix: str, data_dir: Path):
    d = start(data_dir=data_dir, **ENGINE, remote_nodes=",".join(cluster.nodes),
              remote_prefix=prefix, remote_timeout_s=1.0)
    with CacheClient(d.endpoint, heartbeat=False) as c:
        assert wait_until(lambda: c.stats()["tiers"]["remote"]["ready"], 20.0), c.stats()
    return d


@pytest.fixture(scope="module")
def prompts() -> list[list[int]]:
    with make_llm(reuse="none") as llm:
        return corpus_ids(llm, 2, LEN, offset=29)


def _body(prompt: list[int], **more) -> dict:
    return {"prompt": prompt, "max_tokens": OUT, "temperature": 0, "ignore_eos": True, **more}


def _stream(url: str, body: dict, seen: threading.Event, events: list) -> None:
    with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True},
                      timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                data = line[len("data: "):]
                events.append(data if data == "[DONE]" else json.loads(data))
                if len(events) >= 8:
                    seen.set()


def test_a_sigtermed_engine_drains_and_its_requests_resume_exactly_on_another_host(
        start_daemon, redis_cluster: LocalRedisCluster, tmp_path: Path,
        prompts: list[list[int]]) -> None:
    ref = reference(prompts, OUT)
    prefix = unique_prefix()
    daemon_a = _host(start_daemon, redis_cluster, prefix, tmp_path / "a")
    daemon_b = _host(start_daemon, redis_cluster, prefix, tmp_path / "b")
    url_a, proc_a = _engine(tmp_path, "a", daemon_a.endpoint)
    url_b, proc_b = _engine(tmp_path, "b", daemon_b.endpoint)
    try:
        plain: dict = {}
        seen, events = threading.Event(), []
        threads = [
            threading.Thread(target=lambda: plain.update(r=httpx.post(
                f"{url_a}/v1/completions", json=_body(prompts[0]), timeout=120))),
            threading.Thread(target=_stream, args=(url_a, _body(prompts[1]), seen, events)),
        ]
        for t in threads:
            t.start()
        assert seen.wait(60), "the stream never got going"
        proc_a.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        assert proc_a.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal at exit
        daemon_a.kill()  # the host is gone: only the cluster has its blocks

        reply = plain["r"]
        assert reply.status_code == 503 and reply.headers["retry-after"], reply.text
        err = reply.json()["error"]
        assert err["type"] == "engine_draining"
        t0 = err["token_ids"]
        assert 0 < len(t0) < OUT and t0 == ref[0][:len(t0)]
        assert events[-1] == "[DONE]" and events[-2]["error"]["type"] == "engine_draining"
        t1 = events[-2]["error"]["token_ids"]
        assert 8 <= len(t1) < OUT and t1 == ref[1][:len(t1)]
        streamed = "".join(e["choices"][0]["text"] for e in events[:-2])
        assert events[-2]["error"]["text"].startswith(streamed)

        texts = [err["text"], events[-2]["error"]["text"]]
        for prompt, before, want, shown in ((prompts[0], t0, ref[0], texts[0]),
                                            (prompts[1], t1, ref[1], texts[1])):
            got = httpx.post(f"{url_b}/v1/completions", timeout=120,
                             json=_body(prompt, resume_token_ids=before, logprobs=0)).json()
            usage = got["usage"]
            assert usage["completion_tokens"] == OUT - len(before)
            assert usage["prompt_tokens"] == LEN + len(before)
            # every full block whose KV existed at the drain (all but the last token's) came
            # from the cluster
            flushed = (LEN + len(before) - 1) // B * B
            assert usage["prompt_tokens_details"]["cached_tokens"] >= flushed > 0
            with make_llm(reuse="none") as plain_llm:  # the error's text joins exactly
                assert shown + got["choices"][0]["text"] == plain_llm.tokenizer.decode(want)
        with make_llm(cache_endpoint=daemon_b.endpoint) as llm:  # exact ids, from the cache
            req = llm.engine.add_request("resumed", prompts[0], greedy(OUT), resume=t0)
            outs = []
            while llm.engine.has_unfinished:
                outs += llm.engine.step()
            assert t0 + outs[-1].token_ids == ref[0]
            assert req.stats.cached_tokens >= (LEN + len(t0) - 1) // B * B
    finally:
        for proc in (proc_a, proc_b):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)


def test_the_resuming_client_moves_a_stream_to_another_engine_without_a_seam(
        start_daemon, redis_cluster: LocalRedisCluster, tmp_path: Path,
        prompts: list[list[int]]) -> None:
    ref = reference(prompts[:1], OUT)
    prefix = unique_prefix()
    daemon_a = _host(start_daemon, redis_cluster, prefix, tmp_path / "a")
    daemon_b = _host(start_daemon, redis_cluster, prefix, tmp_path / "b")
    url_a, proc_a = _engine(tmp_path, "a", daemon_a.endpoint)
    url_b, proc_b = _engine(tmp_path, "b", daemon_b.endpoint)
    client = ResumingClient([url_a, url_b])
    pieces: list[str] = []
    try:
        stream: Iterator[str] = client.stream(_body(prompts[0], stop=["§never§"]))
        for piece in stream:
            pieces.append(piece)
            if len(pieces) == 6:  # the drain notice arrives mid-stream
                threading.Thread(target=proc_a.send_signal, args=(signal.SIGTERM,)).start()
        assert client.moves == 1
        with make_llm(reuse="none") as plain_llm:
            assert "".join(pieces) == plain_llm.tokenizer.decode(ref[0])
        after = client.completion(_body(prompts[0]))  # A is gone: B answers, nothing moves
        assert after["resumed"] == 0
    finally:
        for proc in (proc_a, proc_b):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
