"""Engine configuration: one frozen dataclass, validated field by field (read from a file, the
environment and flags by ``engine/settings.py``). Importing it does not import torch.

Every knob an experiment turns is here, so the end-to-end benchmark's configurations are
configurations, not code: reuse semantics (``none`` / ``prefix`` / ``msa``), the tiers the
engine fetches from, write-through to the CPU tier, the daemon endpoint (its residency policy
is the daemon's configuration), and the chunking mode (``adaptive`` with a step-time objective,
or ``fixed`` chunks).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from asymcache.cacheserver.protocol.sockets import ClientCurve
    from asymcache.engine.kv_manager import KVConfig

CHUNKING_MODES = ("adaptive", "fixed")
TIME_CAPS = ("max_retention_s", "max_pin_ttl_s")  # seconds a request may ask for, per tenant


@dataclass(frozen=True)
class EngineConfig:
    """How one engine runs.

    * ``model``: a Hugging Face folder, or ``"builtin"`` (created on first use).
    * ``device`` / ``dtype``: ``"cpu"``/``"cuda[:i]"``; dtype ``None`` = float32 on CPU, bfloat16
      on CUDA.
    * ``block_size``: tokens per KV block. ``num_gpu_blocks``: pool slots; ``None`` sizes the
      pool from ``kv_cache_bytes`` (default: 256 MiB on CPU, 90% of free memory on CUDA).
    * ``max_model_len``: longest context (default: the model's).
    * ``max_num_seqs`` / ``max_num_batched_tokens``: at most this many running requests and
      query tokens per step.
    * ``max_waiting_requests``: backpressure of the HTTP server. While this many requests wait
      to start (submitted, not yet running), a new request gets 429 with the reason; a request
      that finds room may still bring a batch of prompts, so the queue stays below this plus
      the per-request prompt limit. Default 256.
    * ``chunking``: ``adaptive`` (prefill share from ``target_step_s`` and the cost model; at
      least ``min_prefill_tokens`` per step) or ``fixed`` (``chunk_tokens`` tokens per step).
      ``tpot_window``: adaptive lets a decode fall ``tpot_window - 1`` targets behind a pace
      of one token per ``target_step_s`` (an allowance that starts full and refills by what
      each gap saves), which a step may spend; no gap then exceeds ``tpot_window`` targets
      (1: every step within ``target_step_s``).
      Default 16.
      ``step_calibration``: adaptive chunking corrects the cost model by the steps' measured
      wall time (``engine/step_clock.py``); off, it plans by the model alone (reproducible
      chunks, for tests and studies). ``ttft_slo_s``: a prefill that has waited this long since
      its arrival is overdue, and while one is, prefills take the whole step (the step-time
      objective yields to it; 0 = never). Default 1 s.
    * ``cost_model``: a preset name or a profile JSON path (``asymcache profile``); ``"auto"``
      measures this device briefly at start.
    * ``reuse``, ``fetch_tiers``, ``write_through``: see
      :class:`asymcache.engine.kv_manager.KVConfig`.
    * ``victim_stock``: victims a daemon-connected engine asks for ahead of need (one-way
      ALLOCATE; their CPU copies are made as they come, so a full pool gives a slot without a
      round trip); 0: victims only when a slot is needed. Default 16.
    * ``cache_endpoint``: the daemon (``ipc://…`` or ``tcp://…``), ``None`` for none;
      ``engine_id`` names this engine to it (default: host and process id);
      ``daemon_timeout_s`` bounds every request to it.
    * ``curve_server_key_file`` / ``curve_client_key_file``: CURVE for a daemon that requires
      it (a ``tcp://`` endpoint off loopback): the daemon's public certificate and this engine's
      secret certificate (``asymcache keys``), both or neither; used for the events sockets too.
    * ``events_endpoint`` / ``events_replay_endpoint``: the daemon's KV events and their replay
      (its ``events_endpoint`` and ``events_replay_endpoint``), both or neither; with them the
      engine mirrors which blocks the daemon's CPU and disk tiers hold and sends no LOOKUP that
      cannot find anything (docs/engine.md, "LOOKUP skip"). ``lookup_mirror_blocks`` bounds
      that mirror (about 100 bytes a block); size it to the daemon's CPU slots plus disk blocks:
      a host holding more makes every LOOKUP go out.
    * ``api_keys_file``: a JSON file of the HTTP API's keys, each mapped to a tenant and its
      ``cache_salt`` or to an administrator (``engine/server/api_keys.py``; docs/security.md,
      "API keys and tenants"). With it every ``/v1`` request needs ``Authorization: Bearer
      <key>`` and runs with its key's salt; the file is read again when it changes. ``None``:
      no key needed (a warning when the server listens on a non-loopback host).
    * ``max_retention_s`` / ``max_pin_ttl_s``: the longest ``prompt_cache_retention`` and
      ``pin_ttl_s`` a request gets (longer asks are capped silently; 0: no cap; default one
      day and one hour). A tenant's entry in ``api_keys_file`` may set its own. The daemon
      caps them again per tenant (its ``[quotas]``).
    * ``attn_backend``: kernel backend (``None`` automatic, ``torch``, ``triton``, ``reference``).
    * ``drain_timeout_s``: on SIGTERM the HTTP server drains (docs/engine.md, "Drain and
      resume"): it writes every running request's KV through the daemon within this many
      seconds, ends each with a resumable ``engine_draining`` error, then exits. Keep it under
      the platform's grace period (compose's ``stop_grace_period``) less a few seconds.
    * ``seed``: seeds requests that sample without their own seed.
    * ``cpu_threads``: torch intra-op threads of a CPU engine (``None``: torch's default). A
      process-wide setting, applied when the engine is built; on a shared machine, fewer
      threads than cores avoid OpenMP threads waiting on each other.
    """

    model: str = "builtin"
    device: str = "cpu"
    dtype: str | None = None
    block_size: int = 16
    num_gpu_blocks: int | None = None
    kv_cache_bytes: int | None = None
    max_model_len: int | None = None
    max_num_seqs: int = 32
    max_num_batched_tokens: int = 2048
    max_waiting_requests: int = 256
    chunking: str = "adaptive"
    chunk_tokens: int = 512
    target_step_s: float = 0.1
    tpot_window: int = 16
    min_prefill_tokens: int = 32
    step_calibration: bool = True
    ttft_slo_s: float = 1.0
    cost_model: str = "auto"
    reuse: str = "msa"
    fetch_tiers: tuple[str, ...] = ("cpu", "disk", "remote")  # planner.FETCH_TIERS
    write_through: bool = True
    victim_stock: int = 16
    cache_endpoint: str | None = None
    engine_id: str | None = None
    daemon_timeout_s: float = 2.0
    curve_server_key_file: str | None = None
    curve_client_key_file: str | None = None
    events_endpoint: str | None = None
    events_replay_endpoint: str | None = None
    lookup_mirror_blocks: int = 1 << 18
    api_keys_file: str | None = None
    max_retention_s: float = 86400.0
    max_pin_ttl_s: float = 3600.0
    drain_timeout_s: float = 20.0
    attn_backend: str | None = None
    seed: int = 0
    cpu_threads: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "fetch_tiers", tuple(self.fetch_tiers))
        for name in ("block_size", "max_num_seqs", "max_num_batched_tokens", "chunk_tokens",
                     "min_prefill_tokens", "max_waiting_requests", "lookup_mirror_blocks",
                     "tpot_window"):
            _positive_int(name, getattr(self, name))
        _int_at_least("victim_stock", self.victim_stock, 0, " (0: victims only when needed)")
        for name in ("num_gpu_blocks", "kv_cache_bytes", "max_model_len", "cpu_threads"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        for name in ("target_step_s", "daemon_timeout_s", "drain_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"EngineConfig.{name} must be a positive number, got {value!r}")
        for name in TIME_CAPS:
            value = getattr(self, name)
            if not is_seconds_cap(value):
                raise ValueError(f"EngineConfig.{name} must be a number of seconds >= 0 (0: no "
                                 f"cap), got {value!r}")
        if not is_seconds_cap(self.ttft_slo_s):
            raise ValueError(f"EngineConfig.ttft_slo_s must be a number of seconds >= 0 (0: a "
                             f"prefill is never overdue), got {self.ttft_slo_s!r}")
        if bool(self.curve_server_key_file) != bool(self.curve_client_key_file):
            raise ValueError("EngineConfig.curve_server_key_file and curve_client_key_file go "
                             "together (the daemon's public certificate, this engine's secret "
                             "one): set both or neither")
        if bool(self.events_endpoint) != bool(self.events_replay_endpoint):
            raise ValueError("EngineConfig.events_endpoint and events_replay_endpoint go "
                             "together (the LOOKUP mirror replays what it missed): set both "
                             "or neither")
        if self.chunking not in CHUNKING_MODES:
            raise ValueError(f"EngineConfig.chunking must be one of {CHUNKING_MODES}, "
                             f"got {self.chunking!r}")
        self.kv_config  # noqa: B018 - validates reuse and fetch_tiers

    @property
    def curve(self) -> ClientCurve | None:
        """The CURVE keys to reach the daemon with (read from the files), or None."""
        if not self.curve_server_key_file or not self.curve_client_key_file:
            return None
        from asymcache.cacheserver.protocol.sockets import ClientCurve

        try:
            return ClientCurve.from_files(self.curve_server_key_file, self.curve_client_key_file)
        except (OSError, ValueError) as exc:
            raise ValueError(f"EngineConfig.curve_server_key_file / curve_client_key_file: "
                             f"{exc}") from exc

    @property
    def kv_config(self) -> KVConfig:
        from asymcache.engine.kv_manager import KVConfig  # torch: not on import of this module

        return KVConfig(reuse=self.reuse, fetch_tiers=self.fetch_tiers,  # type: ignore[arg-type]
                        write_through=self.write_through, victim_stock=self.victim_stock,
                        max_retention_s=float(self.max_retention_s),
                        max_pin_ttl_s=float(self.max_pin_ttl_s))

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> EngineConfig:
        """Build from keyword arguments, naming any that is not a field."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(f"unknown engine option(s) {unknown}; known: {sorted(known)}")
        return cls(**kwargs)


def is_seconds_cap(value: object) -> bool:
    """Whether ``value`` is a cap in seconds: a finite number >= 0 (0: no cap)."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and 0 <= value < float("inf"))


def _positive_int(name: str, value: object) -> None:
    _int_at_least(name, value, 1)


def _int_at_least(name: str, value: object, least: int, note: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        what = "a positive int" if least == 1 else f"an integer >= {least}{note}"
        raise ValueError(f"EngineConfig.{name} must be {what}, got {value!r}")
