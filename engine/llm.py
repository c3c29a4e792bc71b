"""The offline Python API, in the style of vLLM::

    from asymcache.engine.llm import LLM

    from asymcache.engine.sampling import SamplingParams

    llm = LLM("builtin", device="cpu", cache_endpoint=None)
    for out in llm.generate(["Once upon a time", [1, 2, 3]], SamplingParams(max_tokens=32)):
        print(out.token_ids, out.text)

A prompt is a string or a list of token ids; ``params`` is one :class:`SamplingParams` for all
prompts or one per prompt. Results come back in prompt order, each with the generated
``token_ids`` and ``text``, the ``finish_reason``, and ``stats`` (prompt tokens by source:
resident, fetched, recomputed, new; bytes moved; TTFT). A request's ``prompt_cache_key``
and ``prompt_cache_retention`` (``SamplingParams``) reach the cache daemon when it finishes;
:meth:`LLM.end_session` says that a session is over.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from asymcache.engine.config import EngineConfig
from asymcache.engine.engine import LLMEngine, RequestOutput
from asymcache.engine.sampling import SamplingParams

Prompt = str | Sequence[int]
IDLE_SLEEP_S = 0.005


class LLM:
    """An engine driven synchronously: ``generate`` runs steps until its prompts are done.

    Keyword options are :class:`EngineConfig` fields (``block_size``, ``num_gpu_blocks``,
    ``reuse``, ``chunking``, ``cache_endpoint``, ...); an unknown one raises ``ValueError``.
    """

    def __init__(self, model: str = "builtin", *, device: str = "cpu", dtype: str | None = None,
                 cache_endpoint: str | None = None, registry: CollectorRegistry | None = None,
                 **options: Any) -> None:
        config = EngineConfig.from_kwargs(model=model, device=device, dtype=dtype,
                                          cache_endpoint=cache_endpoint, **options)
        self.engine = LLMEngine(config, registry=registry)
        self._ids = itertools.count()

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    def generate(self, prompts: Prompt | Sequence[Prompt],
                 params: SamplingParams | Sequence[SamplingParams] | None = None,
                 ) -> list[RequestOutput]:
        """Generate for every prompt (batched together); one finished output per prompt."""
        prompts = _as_list(prompts)
        if params is None:
            params = SamplingParams()
        plist = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
        if len(plist) != len(prompts):
            raise ValueError(f"{len(plist)} sampling params for {len(prompts)} prompts")
        ids = [f"llm-{next(self._ids)}" for _ in prompts]
        try:
            for rid, prompt, p in zip(ids, prompts, plist, strict=True):
                self.engine.add_request(rid, prompt, p)
            return self._run(ids)
        except BaseException:
            for rid in ids:
                self.engine.abort(rid)
            raise

    def _run(self, ids: list[str]) -> list[RequestOutput]:
        done: dict[str, RequestOutput] = {}
        while len(done) < len(ids):
            for out in self.engine.step():
                if out.finished:
                    done[out.request_id] = out
            if not self.engine.last_step.seqs:
                time.sleep(IDLE_SLEEP_S)  # waiting for pinned slots to lapse: no busy loop
        return [done[rid] for rid in ids]

    def end_session(self, prompt_cache_key: str, cache_salt: str = "") -> bool:
        """The client's session ``prompt_cache_key`` is over: :meth:`LLMEngine.end_session`."""
        return self.engine.end_session(prompt_cache_key, cache_salt)

    def close(self) -> None:
        """Release what the engine holds with the daemon and close its link."""
        self.engine.close()

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _as_list(prompts: Prompt | Sequence[Prompt]) -> list[Prompt]:
    if isinstance(prompts, str):
        return [prompts]
    if prompts and all(isinstance(t, int) for t in prompts):
        return [list(prompts)]  # one prompt of token ids
    return list(prompts)
