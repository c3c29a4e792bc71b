"""A small HTTP client that survives engine drains: it resends a request whose engine is draining
(a preempted host) to the next engine with the tokens generated so far, so the caller sees one
uninterrupted completion.

An engine that drains ends each request with ``engine_draining`` (HTTP 503, or an SSE error
event in a stream) carrying ``token_ids``; resending the same body with ``resume_token_ids`` =
every token generated so far continues it exactly (greedy; seeded sampling when the body has a
``seed``), reusing the KV the drained engine wrote through its daemon to the shared remote
tier. New requests that reach a draining engine get the same 503 with no tokens, and are
resent as they are. Standard library only (``urllib``, ``http.client``): a client need not
install the engine.

    client = ResumingClient(["http://host-a:8000", "http://host-b:8000"], api_key="sk-...")
    reply = client.completion({"prompt": "...", "max_tokens": 200, "temperature": 0})
    for text in client.stream({"prompt": "...", "max_tokens": 200, "temperature": 0}):
        print(text, end="")

``completion`` works for ``/v1/completions`` and ``/v1/chat/completions`` (``path``); the
merged reply has the text of every part, ``usage.completion_tokens`` counting every part's
tokens and ``resumed`` (how many times the request moved); ``usage.prompt_tokens`` is the last
part's (its prompt includes the resumed tokens). Only single-prompt requests are resumed. An
engine that cannot be reached counts as drained without tokens: the request is resent from
where the last drain left it.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

DRAINING = "engine_draining"
LOST = "connection_lost"  # the engine went away without draining (no tokens to resume with)


class EventStream:
    """The JSON events of a server-sent-event body (its ``data:`` lines), until ``data:
    [DONE]``; :attr:`done` says whether that end was seen (else the stream broke off)."""

    def __init__(self, lines: Iterable[bytes]) -> None:
        self._lines = lines
        self.done = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for raw in self._lines:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line[len("data:"):].strip()
            if data == "[DONE]":
                self.done = True
                return
            yield json.loads(data)


class ResumeFailed(RuntimeError):
    """Every engine was tried ``max_moves`` times, or one answered with another error."""


class ResumingClient:
    """See the module docstring. ``urls``: engines to try in turn (a drained one is skipped
    until every other has been tried); ``max_moves`` bounds the resends of one request."""

    def __init__(self, urls: Sequence[str], api_key: str | None = None,
                 timeout_s: float = 600.0, max_moves: int = 8) -> None:
        if not urls:
            raise ValueError("ResumingClient needs at least one engine URL")
        self.urls = [u.rstrip("/") for u in urls]
        self.api_key, self.timeout_s, self.max_moves = api_key, timeout_s, max_moves
        self._next = 0
        self.moves = 0  # resends so far, over all requests (for tests and logs)

    # ---- non-streaming ------------------------------------------------------------------
    def completion(self, body: dict[str, Any], path: str = "/v1/completions") -> dict[str, Any]:
        """POST ``body`` and return the reply, resending on drains (see the module
        docstring)."""
        tokens: list[int] = []
        before = ""  # the text of ``tokens``: the drained parts' output
        for moves in range(self.max_moves + 1):
            url = self._pick()
            status, reply = self._post(url + path, _with_resume(body, tokens))
            if status == 200:
                done = reply.get("usage", {}).get("completion_tokens", 0) + len(tokens)
                return _merged(reply, before + _text(reply), done, moves)
            error = reply.get("error", {}) if isinstance(reply, dict) else {}
            if status != 503 or error.get("type") != DRAINING:
                raise ResumeFailed(f"{url}{path} answered {status}: {reply}")
            if error.get("token_ids"):  # else it never started there: resend as it was
                tokens, before = list(error["token_ids"]), error.get("text", "")
            self._skip(url)
        raise ResumeFailed(f"the request moved {self.max_moves} times without finishing")

    # ---- streaming ----------------------------------------------------------------------
    def stream(self, body: dict[str, Any], path: str = "/v1/completions") -> Iterator[str]:
        """Stream ``body`` and yield text deltas; on a drain, resume elsewhere and go on (the
        text a drained engine held back, a possible stop-string prefix, is yielded first)."""
        tokens: list[int] = []
        streamed = ""
        for _ in range(self.max_moves + 1):
            url = self._pick()
            drained: dict[str, Any] | None = None
            part = 0  # characters this engine streamed
            for event in self._events(url + path, {**_with_resume(body, tokens),
                                                   "stream": True}):
                error = event.get("error")
                if error is not None:
                    lost_midway = error.get("type") == LOST and part
                    if error.get("type") not in (DRAINING, LOST) or lost_midway:
                        raise ResumeFailed(f"{url}{path} stream failed: {error}")
                    drained = error
                    continue
                for choice in event.get("choices", []):
                    text = choice.get("text")
                    if text is None:
                        text = choice.get("delta", {}).get("content") or ""
                    if text:
                        streamed += text
                        part += len(text)
                        yield text
            if drained is None:
                return
            if drained.get("token_ids"):
                tokens = list(drained["token_ids"])
                full = drained.get("text", "")
                if full.startswith(streamed) and len(full) > len(streamed):
                    yield full[len(streamed):]
                streamed = full
            self._skip(url)
        raise ResumeFailed(f"the request moved {self.max_moves} times without finishing")

    # ---- transport ----------------------------------------------------------------------
    def _pick(self) -> str:
        return self.urls[self._next % len(self.urls)]

    def _skip(self, url: str) -> None:
        """``url`` drained: the next request goes to the engine after it."""
        self.moves += 1
        self._next = (self.urls.index(url) + 1) % len(self.urls)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _post(self, url: str, body: dict[str, Any]) -> tuple[int, Any]:
        req = urllib.request.Request(url, json.dumps(body).encode(), self._headers(),
                                     method="POST")
        for attempt in range(3):
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, _json_or_text(e.read())
            except (urllib.error.URLError, ConnectionError) as e:  # the engine is gone
                if attempt == 2:  # as a drain with no new tokens: resent as it was
                    return 503, {"error": {"type": DRAINING, "token_ids": [],
                                           "message": f"unreachable: {e}"}}
                time.sleep(0.2)
        raise AssertionError("unreachable")

    def _events(self, url: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The JSON events of a server-sent-event reply, until ``[DONE]``; a 503 draining
        answer comes back as one error event."""
        parts = urllib.parse.urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout_s)
        try:
            conn.request("POST", parts.path, json.dumps(body).encode(), self._headers())
            resp = conn.getresponse()
            if resp.status != 200:
                yield _json_or_text(resp.read())
                return
            yield from EventStream(resp)
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            yield {"error": {"type": LOST, "message": f"connection lost: {e}"}}
        finally:
            conn.close()


def _with_resume(body: dict[str, Any], tokens: list[int]) -> dict[str, Any]:
    return {**body, "resume_token_ids": tokens} if tokens else dict(body)


def _text(reply: dict[str, Any]) -> str:
    choice = reply["choices"][0]
    return choice["text"] if "text" in choice else choice["message"]["content"]


def _merged(reply: dict[str, Any], text: str, completion_tokens: int,
            moves: int) -> dict[str, Any]:
    """The last part's reply with the whole text, every part's output tokens counted and the
    number of moves (``resumed``)."""
    out = dict(reply)
    choice = dict(reply["choices"][0])
    if "text" in choice:
        choice["text"] = text
    else:
        choice["message"] = {**choice["message"], "content": text}
    out["choices"] = [choice]
    usage = dict(reply.get("usage", {}))
    usage["completion_tokens"] = completion_tokens
    out["usage"] = usage
    out["resumed"] = moves
    return out


def _json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return {"error": {"type": "unreadable", "message": raw[:500].decode("utf-8", "replace")}}
