"""HFPolicy's continuous-batching engine: exact results, real batching, real prefix reuse."""

from __future__ import annotations

import asyncio
import itertools
import random
import shutil

import pytest
import torch

from tests.policy_fixtures import tiny_model  # noqa: F401 - fixture
from treegym.policies import GenerateRequest, PolicyError, SamplingParams
from treegym.policies.hf import HFPolicy
from treegym.policies.sampling import sample_batch


def _prompt(policy: HFPolicy, text: str) -> tuple[int, ...]:
    return tuple(policy.tokenizer.encode(text, add_special_tokens=False))


def _random_prompts(n: int, seed: int, vocab: int) -> list[tuple[int, ...]]:
    rng = random.Random(seed)
    return [tuple(rng.randrange(5, vocab) for _ in range(rng.randrange(8, 120))) for _ in range(n)]


def _teacher_forced(policy: HFPolicy, req: GenerateRequest, out: tuple[int, ...]) -> torch.Tensor:
    """Logprobs of ``out`` after the prompt by one plain transformers forward."""
    with torch.inference_mode():
        x = torch.tensor([[*req.input_ids, *out]])
        logits = policy.model(input_ids=x).logits[0, len(req.input_ids) - 1 : -1].float()
        logp = torch.log_softmax(logits / max(req.sampling.temperature, 1e-6), dim=-1)
        if req.sampling.greedy:
            logp = torch.log_softmax(logits, dim=-1)
        return logp.gather(1, torch.tensor(out)[:, None]).squeeze(1)


def test_sampling_respects_greedy_top_k_top_p_and_draws():
    logits = torch.tensor([[0.0, 2.0, 1.0, -1.0]] * 3)
    greedy = SamplingParams(temperature=0.0)
    tokens, lps = sample_batch(logits, [greedy] * 3, [0.0, 0.5, 0.99])
    assert tokens == [1, 1, 1]
    assert lps[0] == pytest.approx(float(torch.log_softmax(logits[0], 0)[1]))

    def picks(params):
        return {sample_batch(logits[:1], [params], [u / 50])[0][0] for u in range(50)}

    assert picks(SamplingParams(top_k=2)) == {1, 2}
    assert picks(SamplingParams(top_p=0.5)) == {1}  # token 1 alone holds more than half the mass
    # each row uses its own parameters and its own draw
    mixed, _ = sample_batch(logits, [greedy, SamplingParams(), SamplingParams()], [0.9, 0.0, 0.999])
    assert mixed == [1, 0, 3]


def test_logprobs_match_a_plain_forward_and_cache_changes_nothing(tiny_model):  # noqa: F811
    cached, plain = HFPolicy(tiny_model), HFPolicy(tiny_model, cache_bytes=0)
    prompts = _random_prompts(10, seed=1, vocab=len(cached.tokenizer))
    reqs = [GenerateRequest(p, SamplingParams(max_new_tokens=20, seed=i, temperature=t))
            for i, p in enumerate(prompts) for t in (0.0, 0.7)]  # fmt: skip
    batch = cached.generate_sync(reqs)
    for req, res in zip(reqs, batch, strict=True):
        ref = _teacher_forced(cached, req, res.output_ids)
        assert (ref - torch.tensor(res.logprobs)).abs().max() < 1e-4
    alone = [plain.generate_sync([r])[0] for r in reqs]
    assert [r.output_ids for r in alone] == [r.output_ids for r in batch]
    assert all(r.cached_tokens == 0 for r in alone)


def _play_turns(policy: HFPolicy, sampling: SamplingParams, turns: int = 3):
    ids = _prompt(
        policy, "<|system|>play<|end|>\n<|user|>-= Hall =-\nExits: east.<|end|>\n<|assistant|>"
    )
    outs = []
    for turn in range(turns):
        (res,) = asyncio.run(policy.generate([GenerateRequest(ids, sampling)]))
        outs.append(res)
        obs = _prompt(policy, f"\n<|user|>Nothing happens {turn}.<|end|>\n<|assistant|>")
        ids = ids + res.output_ids + obs
    return outs


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_multi_turn_reuses_prompt_and_generation(tiny_model, temperature):  # noqa: F811
    sampling = SamplingParams(max_new_tokens=24, temperature=temperature, seed=11)
    with_cache = _play_turns(HFPolicy(tiny_model), sampling)
    without = _play_turns(HFPolicy(tiny_model, cache_bytes=0), sampling)
    for a, b in zip(with_cache, without, strict=True):
        assert a.output_ids == b.output_ids
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)) < 1e-4
    assert [r.cached_tokens for r in without] == [0, 0, 0]
    assert with_cache[0].cached_tokens == 0
    for prev, cur in itertools.pairwise(with_cache):
        # everything but the last generated token (never fed, so it has no KV) is reused
        assert cur.cached_tokens == prev.prompt_tokens + len(prev.output_ids) - 1


def test_siblings_share_the_prefill_and_keep_their_own_seeds(tiny_model):  # noqa: F811
    policy = HFPolicy(tiny_model)
    prompt = _prompt(policy, "<|system|>x<|end|>\n<|user|>look<|end|>\n<|assistant|>")
    reqs = [GenerateRequest(prompt, SamplingParams(max_new_tokens=16, seed=s), rid=str(s))
            for s in range(4)]  # fmt: skip
    batch = asyncio.run(policy.generate(reqs))
    assert [r.rid for r in batch] == ["0", "1", "2", "3"]
    assert len({r.output_ids for r in batch}) > 1
    assert batch[0].cached_tokens == 0
    assert all(r.cached_tokens == len(prompt) - 1 for r in batch[1:])
    assert policy.engine.prefill_tokens == len(prompt) - 1  # the trunk was computed once
    single = HFPolicy(tiny_model, cache_bytes=0)
    for req, res in zip(reqs, batch, strict=True):
        assert single.generate_sync([req])[0].output_ids == res.output_ids


def test_concurrent_callers_share_decode_steps_and_get_the_same_tokens(tiny_model):  # noqa: F811
    policy = HFPolicy(tiny_model)
    prompts = _random_prompts(8, seed=2, vocab=len(policy.tokenizer))
    sampling = [SamplingParams(max_new_tokens=16, seed=i, stop_token_ids=()) for i in range(8)]
    reqs = [GenerateRequest(p, s) for p, s in zip(prompts, sampling, strict=True)]

    async def callers():  # eight separate generate() calls in flight at once
        return await asyncio.gather(*(policy.generate([r]) for r in reqs))

    together = [res for (res,) in asyncio.run(callers())]
    steps = policy.engine.forward_steps
    sequential = HFPolicy(tiny_model)
    alone = [sequential.generate_sync([r])[0] for r in reqs]
    assert [r.output_ids for r in together] == [r.output_ids for r in alone]
    assert steps < sequential.engine.forward_steps / 2  # rows decoded in shared forwards


def test_a_small_pool_evicts_and_still_gives_the_same_results(tiny_model):  # noqa: F811
    big = HFPolicy(tiny_model)
    bytes_per_token = 2 * 2 * 2 * 16 * 4  # layers, k+v, kv heads, head dim, float32
    small = HFPolicy(tiny_model, cache_bytes=bytes_per_token * 600)
    # four full contexts is the floor: shrink it to force eviction under load
    assert small.engine.pool.capacity == 4 * small.context_length + 1
    prompts = _random_prompts(40, seed=3, vocab=len(big.tokenizer))
    reqs = [GenerateRequest(p * 4, SamplingParams(max_new_tokens=12, seed=i))
            for i, p in enumerate(prompts)]  # fmt: skip
    want = big.generate_sync(reqs)
    for _ in range(2):  # the second pass finds some prefixes evicted
        got = small.generate_sync(reqs)
        assert [r.output_ids for r in got] == [r.output_ids for r in want]
    engine = small.engine
    assert engine.pool.free_slots + engine.radix.total_size == engine.pool.capacity - 1


def test_weight_updates_flush_the_cache_and_refuse_other_shapes(tiny_model, tmp_path):  # noqa: F811
    from transformers import AutoModelForCausalLM

    policy = HFPolicy(tiny_model)
    prompt = _prompt(policy, "<|user|>look<|end|>\n<|assistant|>")
    req = GenerateRequest(prompt, SamplingParams(max_new_tokens=8, temperature=0.0))
    before = policy.generate_sync([req])[0]
    assert before.weight_version == "0"
    other = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    other.save_pretrained(tmp_path / "new")
    assert asyncio.run(policy.load_weights(tmp_path / "new")) == "1"
    after = policy.generate_sync([req])[0]
    assert after.weight_version == "1" and after.cached_tokens == 0  # stale KV never reused
    assert after.output_ids != before.output_ids
    ref = _teacher_forced(policy, req, after.output_ids)
    assert (ref - torch.tensor(after.logprobs)).abs().max() < 1e-4

    wider = tmp_path / "wider"
    shutil.copytree(tiny_model, wider)
    from safetensors.torch import load_file, save_file

    state = load_file(wider / "model.safetensors")
    name = next(k for k in state if k.endswith("q_proj.weight"))
    state[name] = torch.zeros(state[name].shape[0] + 1, state[name].shape[1])
    save_file(state, wider / "model.safetensors")
    with pytest.raises(PolicyError, match=r"does not fit the served model: shape of .*q_proj"):
        asyncio.run(policy.load_weights(wider))
    assert policy.generate_sync([req])[0].output_ids == after.output_ids  # still serving v1


def test_bad_input_is_a_clear_error(tiny_model, tmp_path):  # noqa: F811
    policy = HFPolicy(tiny_model)
    with pytest.raises(PolicyError, match="empty prompt"):
        asyncio.run(policy.generate([GenerateRequest(())]))
    with pytest.raises(PolicyError, match="does not fit the model's context"):
        asyncio.run(policy.generate([GenerateRequest((5,) * 2000)]))
    with pytest.raises(PolicyError, match=r"config\.json missing"):
        HFPolicy(tmp_path)
    mismatched = tmp_path / "mismatched"
    shutil.copytree(tiny_model, mismatched)
    policy.tokenizer.add_tokens([f"<extra{i}>" for i in range(50)])
    policy.tokenizer.save_pretrained(mismatched)
    with pytest.raises(PolicyError, match=r"tokenizer .* has 4\d\d tokens but the model's"):
        HFPolicy(mismatched)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(PolicyError, match=r"cannot read weights .*model\.safetensors"):
        asyncio.run(policy.load_weights(broken))
    with pytest.raises(PolicyError, match=r"cannot read weights .*model\.safetensors"):
        HFPolicy(broken)
    with pytest.raises(PolicyError, match=r"no \*\.safetensors weights"):
        asyncio.run(policy.load_weights(tmp_path))
    assert policy.generate_sync([GenerateRequest((5, 6))])[0].weight_version == "0"
