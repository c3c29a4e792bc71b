"""The soak's load: client threads sending greedy completions to the engines' HTTP API.

Each of ``clients`` threads belongs to one tenant (alternating) and sends one request at a time
(so at most ``clients`` requests are in flight, plus a fault's burst) to an engine drawn from
those up, with the tenant's API key: the engine runs it with the key's ``cache_salt``. The
prompt comes from :class:`~asymcache.ops.soak.tenancy.Mix`; the
:class:`~asymcache.ops.soak.tenancy.Ledger` counts it when it is sent and, when the reply
arrives, says what the tenant may have found cached. Each reply is checked: its text and
per-token texts (``logprobs.tokens``) against the no-cache reference (a difference is
``differ``), its ``usage.prompt_tokens_details.cached_tokens`` against the ledger (more than
the tenant's own prefix is ``cross``). A failed request (an HTTP error status, a transport
error, a timeout) is recorded with the reason; which failures were expected (in flight at an
engine that was being killed) is decided afterwards, from the faults' windows.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

import httpx

from asymcache.ops.soak.prompts import TENANTS, Prompt
from asymcache.ops.soak.stack import Stack
from asymcache.ops.soak.tenancy import Ledger, Mix

REQUEST_TIMEOUT_S = 120.0
# A connection idle this long is not reused: the engine's HTTP server (uvicorn) closes idle
# ones after 5 s, and a request sent on one it is closing fails with "Server disconnected".
KEEPALIVE_S = 2.0
EXAMPLES = 5  # differing outputs and failures kept for the report


@dataclass
class Record:
    """One request, times in seconds since the load started."""

    t_send: float
    t_done: float
    engine: int
    tenant: int
    pid: int
    ok: bool
    error: str = ""
    cached: int = 0
    own: int = 0  # tokens the tenant's own requests may have cached for it
    other: int = 0  # the most another tenant's requests may have cached for it
    differ: bool = False
    tag: str = "load"
    n_prompt: int = 0

    @property
    def cross(self) -> bool:
        return self.ok and self.cached > self.own


def _http() -> httpx.Client:
    return httpx.Client(timeout=REQUEST_TIMEOUT_S,
                        limits=httpx.Limits(keepalive_expiry=KEEPALIVE_S))


class Load:
    """See the module docstring. Thread-safe; :meth:`start` / :meth:`stop`."""

    def __init__(self, stack: Stack, mix: Mix, ledger: Ledger, max_tokens: int, clients: int,
                 max_requests: int, seed: int) -> None:
        self.stack, self.mix, self.ledger = stack, mix, ledger
        self.max_tokens, self.clients, self.max_requests = max_tokens, clients, max_requests
        self.seed = seed
        self.t0 = time.monotonic()
        self.records: list[Record] = []
        self.examples: list[dict] = []
        self._up = set(range(len(stack.engines)))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def now(self) -> float:
        return time.monotonic() - self.t0

    # ---- engines up and down --------------------------------------------------------------
    def up_engines(self) -> list[int]:
        with self._lock:
            return sorted(self._up)

    def mark_down(self, engine: int) -> float:
        """No new request goes to ``engine``; returns when (load seconds)."""
        with self._lock:
            self._up.discard(engine)
        return self.now()

    def mark_up(self, engine: int) -> float:
        with self._lock:
            self._up.add(engine)
        return self.now()

    # ---- threads --------------------------------------------------------------------------
    def start(self) -> None:
        self.t0 = time.monotonic()
        for n in range(self.clients):
            t = threading.Thread(target=self._client, args=(n,), name=f"soak-client-{n}",
                                 daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(REQUEST_TIMEOUT_S + 10)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _client(self, n: int) -> None:
        tenant, rng = n % TENANTS, random.Random(self.seed * 1000 + n)
        with _http() as http:
            while not self._stop.is_set() and len(self.records) < self.max_requests:
                engines = self.up_engines()
                if not engines:
                    time.sleep(0.1)
                    continue
                prompt = self.mix.pick(tenant, rng)
                if prompt is None:  # no reference ready yet
                    time.sleep(0.1)
                    continue
                self.send(http, tenant, prompt, rng.choice(engines))

    def burst(self, pairs: list[tuple[int, Prompt]], engine: int | None = None
              ) -> list[threading.Thread]:
        """Send each ``(tenant, prompt)`` at once, each from its own thread (joined by the
        caller), to ``engine`` or to engines in turn."""
        threads, ups = [], self.up_engines()
        for k, (tenant, prompt) in enumerate(pairs):
            if engine is None and not ups:
                break
            target = engine if engine is not None else ups[k % len(ups)]

            def one(tenant: int = tenant, prompt: Prompt = prompt, target: int = target) -> None:
                with _http() as http:
                    self.send(http, tenant, prompt, target, tag="burst")

            t = threading.Thread(target=one, daemon=True)
            t.start()
            threads.append(t)
        return threads

    # ---- one request ----------------------------------------------------------------------
    def send(self, http: httpx.Client, tenant: int, prompt: Prompt, engine: int,
             tag: str = "load") -> Record:
        self.ledger.sent(tenant, prompt)
        rec = Record(self.now(), 0.0, engine, tenant, prompt.pid, ok=False, tag=tag,
                     n_prompt=len(prompt.tokens))
        body = {"prompt": list(prompt.tokens), "max_tokens": self.max_tokens,
                "temperature": 0.0, "ignore_eos": True, "logprobs": 1}
        headers = {"Authorization": f"Bearer {self.stack.api_keys[tenant]}"}
        url = f"{self.stack.engines[engine].url}/v1/completions"
        try:
            reply = http.post(url, json=body, headers=headers)
            if reply.status_code != 200:
                rec.error = f"HTTP {reply.status_code}: {reply.text[:200]}"
            else:
                self._check(rec, prompt, reply.json())
                rec.own, rec.other = self.ledger.judge(tenant, prompt)
        except httpx.HTTPError as e:
            rec.error = f"{type(e).__name__}: {e}"[:300]
        except (ValueError, KeyError, TypeError, IndexError) as e:  # a malformed body
            rec.error = f"bad reply: {type(e).__name__}: {e}"[:300]
        rec.t_done = self.now()
        self._keep(rec, prompt)
        return rec

    @staticmethod
    def _check(rec: Record, prompt: Prompt, data: dict) -> None:
        choice = data["choices"][0]
        pieces = tuple((choice.get("logprobs") or {}).get("tokens") or ())
        rec.differ = choice["text"] != prompt.ref_text or pieces != prompt.ref_pieces
        rec.cached = int(data["usage"]["prompt_tokens_details"]["cached_tokens"])
        rec.ok = True
        rec.error = f"got {choice['text']!r}" if rec.differ else ""

    def _keep(self, rec: Record, prompt: Prompt) -> None:
        with self._lock:
            self.records.append(rec)
            if (rec.differ or rec.cross or not rec.ok) and len(self.examples) < 4 * EXAMPLES:
                self.examples.append({
                    "t_s": round(rec.t_send, 2), "engine": rec.engine, "tenant": rec.tenant,
                    "pid": rec.pid, "kind": prompt.kind, "ok": rec.ok, "differ": rec.differ,
                    "cached": rec.cached, "own": rec.own, "error": rec.error,
                    "want": prompt.ref_text if rec.differ else None})

    def snapshot(self) -> list[Record]:
        with self._lock:
            return list(self.records)
