"""HFPolicy and its prefix KV cache: same results with and without the cache, real savings."""

from __future__ import annotations

import asyncio
import itertools

import pytest
import torch

from tests.policy_fixtures import tiny_model  # noqa: F401 - fixture
from treegym.policies import GenerateRequest, PolicyError, SamplingParams
from treegym.policies.hf import HFPolicy, sample_token
from treegym.policies.prefix_cache import PrefixKVCache


def _kv(length: int, value: float = 0.0):
    t = torch.full((1, 2, length, 4), value)
    return ((t, t.clone()),)


def test_prefix_cache_returns_the_longest_stored_prefix():
    cache = PrefixKVCache(1 << 20)
    cache.insert([1, 2, 3], _kv(3, 1))
    cache.insert([1, 2, 3, 4, 5], _kv(5, 2))
    cache.insert([1, 9], _kv(2, 3))
    assert cache.lookup([1, 2, 3, 4, 5, 6])[0] == 5
    assert cache.lookup([1, 2, 3, 4])[0] == 3
    assert cache.lookup([1, 9, 9])[1][0][0][0, 0, 0, 0] == 3
    assert cache.lookup([2, 2]) == (0, None)
    assert cache.lookup([1, 2, 3, 4, 5], max_len=4)[0] == 3
    with pytest.raises(ValueError, match="covers 3 tokens"):
        cache.insert([1, 2], _kv(3))


def test_prefix_cache_evicts_least_recently_used_within_budget():
    one = sum(k.numel() * 4 + v.numel() * 4 for k, v in _kv(3))
    cache = PrefixKVCache(max_bytes=2 * one)
    cache.insert([1, 1, 1], _kv(3))
    cache.insert([2, 2, 2], _kv(3))
    cache.lookup([1, 1, 1])  # touch: [2,2,2] is now the oldest
    cache.insert([3, 3, 3], _kv(3))
    assert len(cache) == 2 and cache.nbytes <= 2 * one
    assert cache.lookup([2, 2, 2])[0] == 0 and cache.lookup([1, 1, 1])[0] == 3
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0 and cache.lookup([3, 3, 3])[0] == 0


def test_sampling_respects_greedy_top_k_and_seed():
    logits = torch.tensor([0.0, 2.0, 1.0, -1.0])
    g = torch.Generator().manual_seed(0)
    assert sample_token(logits, SamplingParams(temperature=0.0), g)[0] == 1
    picks = {sample_token(logits, SamplingParams(top_k=2), torch.Generator().manual_seed(s))[0]
             for s in range(50)}  # fmt: skip
    assert picks == {1, 2}
    a = sample_token(logits, SamplingParams(seed=3), torch.Generator().manual_seed(3))
    b = sample_token(logits, SamplingParams(seed=3), torch.Generator().manual_seed(3))
    assert a == b and a[1] == pytest.approx(float(torch.log_softmax(logits, 0)[a[0]]))


def _prompt(policy: HFPolicy, text: str) -> tuple[int, ...]:
    return tuple(policy.tokenizer.encode(text, add_special_tokens=False))


def _play_turns(policy: HFPolicy, sampling: SamplingParams, turns: int = 3):
    """A few turns of a multi-turn conversation, each prompt extending the last."""
    ids = _prompt(
        policy, "<|system|>play<|end|>\n<|user|>-= Hall =-\nExits: east.<|end|>\n<|assistant|>"
    )
    outs = []
    for turn in range(turns):
        (res,) = asyncio.run(policy.generate([GenerateRequest(ids, sampling)]))
        outs.append(res)
        ids = (
            ids
            + res.output_ids
            + _prompt(policy, f"\n<|user|>Nothing happens {turn}.<|end|>\n<|assistant|>")
        )
    return outs


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_results_are_identical_with_and_without_the_cache(tiny_model, temperature):  # noqa: F811
    sampling = SamplingParams(max_new_tokens=24, temperature=temperature, seed=11)
    cached, plain = HFPolicy(tiny_model), HFPolicy(tiny_model, cache_bytes=0)
    with_cache, without = _play_turns(cached, sampling), _play_turns(plain, sampling)
    for a, b in zip(with_cache, without, strict=True):
        assert a.output_ids == b.output_ids
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)) < 1e-4
    assert [r.cached_tokens for r in without] == [0, 0, 0]
    # turn 2 and 3 reuse the previous prompt + generation from the cache
    assert with_cache[0].cached_tokens == 0
    for prev, cur in itertools.pairwise(with_cache):
        assert cur.cached_tokens >= prev.prompt_tokens
        assert cur.cached_tokens < cur.prompt_tokens


def test_children_of_a_node_share_one_prefill_and_keep_their_seeds(tiny_model):  # noqa: F811
    policy = HFPolicy(tiny_model)
    prompt = _prompt(policy, "<|system|>x<|end|>\n<|user|>look<|end|>\n<|assistant|>")
    reqs = [
        GenerateRequest(prompt, SamplingParams(max_new_tokens=16, seed=s), rid=str(s))
        for s in range(4)
    ]
    batch = asyncio.run(policy.generate(reqs))
    assert [r.rid for r in batch] == ["0", "1", "2", "3"]
    assert len({r.output_ids for r in batch}) > 1  # different seeds, different samples
    single = HFPolicy(tiny_model, cache_bytes=0)
    for req, res in zip(reqs, batch, strict=True):
        (alone,) = asyncio.run(single.generate([req]))
        assert alone.output_ids == res.output_ids
    assert batch[0].cached_tokens == 0  # cold: the first child computes the prompt once
    assert all(r.cached_tokens == len(prompt) for r in batch[1:])  # siblings reuse it all
    again = asyncio.run(policy.generate(reqs))
    assert again[0].cached_tokens == len(prompt) - 1  # the last prompt token runs for logits
    assert [r.output_ids for r in again] == [r.output_ids for r in batch]


def test_bad_requests_are_clear_errors(tiny_model, tmp_path):  # noqa: F811
    policy = HFPolicy(tiny_model)
    with pytest.raises(PolicyError, match="empty prompt"):
        asyncio.run(policy.generate([GenerateRequest(())]))
    with pytest.raises(PolicyError, match="does not fit"):
        asyncio.run(policy.generate([GenerateRequest((5,) * 2000)]))
    with pytest.raises(PolicyError, match=r"config\.json missing"):
        HFPolicy(tmp_path)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)
