"""Sampler and SamplingParams: greedy, seeded sampling, top-k/top-p filters, validation."""

from __future__ import annotations

import pytest
import torch

from asymcache.engine.sampling import Sampler, SamplingParams, make_generator


def test_greedy_picks_the_argmax_of_each_row() -> None:
    logits = torch.tensor([[0.1, 3.0, -1.0], [5.0, 0.0, 4.9]])
    params = [SamplingParams(temperature=0.0)] * 2
    assert Sampler().sample(logits, params, [None, None]) == [1, 0]


def test_same_seed_gives_same_tokens_whatever_the_batch() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    p = SamplingParams(temperature=1.0, seed=7)
    alone = [Sampler().sample(logits[1:2], [p], [make_generator(p, 0)])[0] for _ in range(1)]
    gens = [make_generator(SamplingParams(temperature=0.7, seed=1), 0), make_generator(p, 0), None]
    batch = Sampler().sample(logits, [SamplingParams(temperature=0.7, seed=1), p,
                                      SamplingParams(temperature=0.0)], gens)
    assert batch[1] == alone[0]
    assert batch[2] == int(logits[2].argmax())


def test_top_k_one_equals_greedy() -> None:
    torch.manual_seed(1)
    logits = torch.randn(4, 100)
    p = SamplingParams(temperature=2.0, top_k=1, seed=3)
    out = Sampler().sample(logits, [p] * 4, [make_generator(p, 0) for _ in range(4)])
    assert out == logits.argmax(dim=-1).tolist()


def test_top_p_keeps_only_the_nucleus() -> None:
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05]]))
    p = SamplingParams(temperature=1.0, top_p=0.8, seed=0)
    gen = make_generator(p, 0)
    seen = {Sampler().sample(logits, [p], [gen])[0] for _ in range(200)}
    assert seen == {0, 1}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"max_tokens": 0}, "max_tokens"), ({"temperature": -1.0}, "temperature"),
     ({"top_p": 0.0}, "top_p"), ({"seed": -2}, "seed"), ({"stop": [""]}, "stop"),
     ({"pin_ttl_s": 0}, "pin_ttl_s"), ({"top_k": 1.5}, "top_k"),
     ({"cache_salt": "s" * 257}, "cache_salt")],
)
def test_bad_sampling_params_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)


def test_stop_accepts_one_string_or_a_list() -> None:
    assert SamplingParams(stop="x").stop == ("x",)
    assert SamplingParams(stop=["a", "b"], stop_token_ids=[3]).stop_token_ids == (3,)
