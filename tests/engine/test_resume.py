"""Resuming a request from the tokens an interrupted run generated (``add_request(resume=)``)
and draining an engine without a daemon, in process: the resumed run's tokens and text continue
the uninterrupted run's exactly, greedy and seeded."""

from __future__ import annotations

import pytest
import torch

from asymcache.engine.sampling import SamplingParams, advance_generator
from tests.engine.engine_fixtures import corpus_ids, make_llm

OUT = 24


def _run(llm, rid: str, prompt: list[int], params: SamplingParams, resume=()):
    llm.engine.add_request(rid, prompt, params, resume=resume)
    outs = []
    while llm.engine.has_unfinished:
        outs += [o for o in llm.engine.step() if o.request_id == rid]
    return outs[-1]


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=0.0, max_tokens=OUT, ignore_eos=True, stop=("zz~",)),
    SamplingParams(temperature=0.9, top_k=50, seed=7, max_tokens=OUT, ignore_eos=True),
], ids=["greedy", "seeded"])
def test_a_resumed_request_continues_the_uninterrupted_run_exactly(params) -> None:
    with make_llm(reuse="none") as llm:
        prompt = corpus_ids(llm, 1, 60, offset=3)[0]
        whole = _run(llm, "whole", prompt, params)
        for k in (1, 9, OUT - 1):
            part = _run(llm, f"resumed-{k}", prompt, params, resume=whole.token_ids[:k])
            assert whole.token_ids[:k] + part.token_ids == whole.token_ids
            assert llm.tokenizer.decode(whole.token_ids[:k]) + part.text == whole.text
            assert len(part.prompt_token_ids) == len(prompt) + k
        with pytest.raises(ValueError, match="leaves nothing to generate"):
            llm.engine.add_request("too-far", prompt, params, resume=whole.token_ids)


def test_the_generator_advances_alike_whatever_the_probabilities() -> None:
    vocab = 512
    a, b, c = (torch.Generator().manual_seed(3) for _ in range(3))
    for _ in range(5):
        torch.multinomial(torch.softmax(torch.randn(vocab) * 4, -1), 1, generator=a)
        torch.multinomial(torch.softmax(torch.randn(vocab), -1), 1, generator=b)
    advance_generator(c, 5, vocab)
    assert torch.equal(a.get_state(), b.get_state()) and torch.equal(a.get_state(), c.get_state())


def test_a_drain_without_a_daemon_ends_every_request_with_its_tokens() -> None:
    params = SamplingParams(temperature=0.0, max_tokens=OUT, ignore_eos=True)
    with make_llm(reuse="none", max_num_seqs=1) as llm:
        p0, p1 = corpus_ids(llm, 2, 40, offset=5)
        llm.engine.add_request("running", p0, params)
        llm.engine.add_request("waiting", p1, params)  # max_num_seqs=1: it never starts
        for _ in range(4):
            llm.engine.step()
        report = llm.engine.drain(5.0)
        assert not llm.engine.has_unfinished
        assert report.token_ids["waiting"] == [] and len(report.token_ids["running"]) >= 3
        assert report.bytes_written == 0 and report.flushed is False
        again = _run(llm, "again", p0, params, resume=report.token_ids["running"])
        whole = _run(llm, "whole", p0, params)
        assert report.token_ids["running"] + again.token_ids == whole.token_ids


def test_a_drain_inside_a_character_joins_the_resumed_text_exactly() -> None:
    import numpy as np

    params = SamplingParams(temperature=0.0, max_tokens=60, ignore_eos=True)
    with make_llm(reuse="none") as llm:
        tok = llm.tokenizer
        prompts = [np.random.default_rng(seed).integers(6, 2048, 200).tolist()
                   for seed in range(19, 40)]
        for prompt in prompts:  # a prompt whose output has a token ending inside a character
            whole = _run(llm, f"whole-{len(prompt)}-{prompt[0]}", prompt, params)
            cuts = [k for k in range(1, OUT) if tok.decode(whole.token_ids[:k]).endswith("\ufffd")]
            if cuts:
                break
        assert cuts, "no output of these prompts splits a character: the test cannot show it"
        k = cuts[0]
        llm.engine.add_request("cut", prompt, params)
        while len(llm.engine._requests["cut"].output_token_ids) < k:
            llm.engine.step()
        report = llm.engine.drain(1.0)
        assert report.token_ids["cut"] == whole.token_ids[:k]
        shown = report.texts["cut"]
        assert not shown.endswith("\ufffd")  # the split character is held back
        rest = _run(llm, "rest", prompt, params, resume=report.token_ids["cut"])
        assert shown + rest.text == whole.text
