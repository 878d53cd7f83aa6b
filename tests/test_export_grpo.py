"""A trainer can use a run folder: the exported logprobs are the model's, token for token, and
examples/grpo_step.py takes a real PPO-clip step on the exported advantages."""

from __future__ import annotations

import asyncio
import importlib.util
import random
from pathlib import Path

import pytest
import torch

from tests.policy_fixtures import tiny_model  # noqa: F401 - fixture
from treegym.harness import (
    InProcessExecutor,
    Runner,
    RunWriter,
    Task,
    TorchRunDataset,
    TreeGRPOSampler,
    load_run,
)
from treegym.policies import GenerateResult, HFPolicy, ReActTemplate, SamplingParams

ROOT = Path(__file__).resolve().parents[1]


def _example(name: str):
    spec = importlib.util.spec_from_file_location(
        f"{name}_example", ROOT / "examples" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class GuidedHFPolicy(HFPolicy):
    """``HFPolicy`` that, on some turns (drawn from the request's seed), answers with the
    expert's action instead of sampling — with the *model's* logprobs of those ids (one
    teacher-forced forward at the sampling temperature). A random tiny model never wins, so
    every advantage would be 0 and a gradient step would prove nothing; guided turns give
    rewards that differ within a group while every logprob stays a real model logprob."""

    def __init__(self, path: Path, p_expert: float = 0.7, **kwargs) -> None:
        super().__init__(path, **kwargs)
        self.template = ReActTemplate(self.tokenizer)
        self.p_expert = p_expert
        self.sampled = self.guided = 0

    async def generate(self, requests):
        return await asyncio.to_thread(self._generate, list(requests))

    def _generate(self, requests):
        out: list[GenerateResult | None] = [None] * len(requests)
        free = []
        for i, req in enumerate(requests):
            plan = (req.hints or {}).get("expert_plan") or []
            if plan and random.Random(req.sampling.seed).random() < self.p_expert:
                ids = self.template.encode(self.template.assistant_text("go on", plan[0]))
                ids = ids[: req.sampling.max_new_tokens]
                out[i] = GenerateResult(tuple(ids), self._score(req, ids), "stop",
                                        len(req.input_ids), 0, 0.0,
                                        weight_version=self.engine.weight_version)  # fmt: skip
                self.guided += 1
            else:
                free.append(i)
        for i, res in zip(free, self.generate_sync([requests[i] for i in free]), strict=True):
            out[i] = res
        self.sampled += len(free)
        return out

    def _score(self, req, ids) -> tuple[float, ...]:
        with torch.inference_mode():
            x = torch.tensor([[*req.input_ids, *ids]])
            logits = self.model(input_ids=x).logits[0, len(req.input_ids) - 1 : -1].float()
            logp = torch.log_softmax(logits / req.sampling.temperature, dim=-1)
            return tuple(logp.gather(-1, torch.tensor(ids)[:, None]).squeeze(-1).tolist())


@pytest.fixture(scope="module")
def hf_run(tiny_model, tmp_path_factory):  # noqa: F811
    """A run sampled by the tiny model at temperature 1.0 (with guided turns) on ToyRooms."""
    policy = GuidedHFPolicy(tiny_model)
    path = tmp_path_factory.mktemp("grpo") / "run"

    async def go():
        ex = InProcessExecutor("treegym/ToyRooms-v0", {"max_episode_steps": 6})
        runner = Runner(policy=policy, template=policy.template, executor=ex,
                        sampler=TreeGRPOSampler(m=2, n=2, l=1, k=3), context_length=1024,
                        sampling=SamplingParams(max_new_tokens=24, temperature=1.0))  # fmt: skip
        try:
            with RunWriter.for_runner(path, runner, config={"env": "treegym/ToyRooms-v0"}) as w:
                async for result in runner.run([Task(f"toy-{i}", {"task": i}, seed=i)
                                                 for i in range(3)]):  # fmt: skip
                    w.write(result)
        finally:
            await ex.close()

    asyncio.run(go())
    assert policy.sampled > 0 and policy.guided > 0  # both kinds of turns are in the run
    return path


def test_logprobs_align_and_one_grpo_step_trains(hf_run, capsys):
    run = load_run(hf_run)
    assert run.samples.adv_grpo.abs().max() > 0.1, "all advantages are 0: the step proves nothing"
    grpo_step = _example("grpo_step")
    report = grpo_step.main([str(hf_run), "--advantage", "grpo", "--lr", "1e-3"])
    printed = capsys.readouterr().out
    assert "max abs logprob diff over loss_mask" in printed and "grad norm" in printed
    assert report["max_abs_logprob_diff"] < 1e-4
    assert report["trained_tokens"] == sum(int(m.sum()) for m in run.samples.loss_mask)
    assert report["grad_norm"] > 0
    assert report["loss_after_step"] < report["loss"]  # the step moved the policy the right way


def test_alignment_check_catches_a_one_token_shift(hf_run):
    grpo_step = _example("grpo_step")
    policy = HFPolicy(load_run(hf_run).manifest["policy"]["model_path"])
    ds = TorchRunDataset(hf_run)
    batch = ds.collate([ds[i] for i in range(4)])
    with torch.no_grad():
        new, mask = grpo_step.token_logprobs(policy.model, batch, 1.0)
    exact = ((new - batch["logprobs"][:, 1:]).abs() * mask).max()
    shifted = torch.roll(batch["logprobs"], 1, dims=1)[:, 1:]  # each logprob one token late
    shifted = ((new - shifted).abs() * mask).max()
    assert exact < 1e-4 < shifted


def test_grpo_step_refuses_another_model(hf_run, tmp_path):
    from tests.policy_fixtures import build_tiny_model

    other = build_tiny_model(tmp_path / "other")
    torch.manual_seed(1)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(other)
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    model.save_pretrained(other)
    with pytest.raises(SystemExit, match="is not the run's"):
        _example("grpo_step").main([str(hf_run), "--model", str(other)])


def _embedded() -> Path | None:
    from treegym.policies import embedded_model_path

    try:
        return embedded_model_path()
    except FileNotFoundError:
        return None


@pytest.mark.skipif(_embedded() is None, reason="the embedded model is not built")
def test_alignment_with_the_embedded_model(tmp_path):
    run = tmp_path / "run"
    _example("collect_run").main([str(run), "--policy", "hf", "--sampler", "chain", "--tasks", "1",
                                  "--max-steps", "3"])  # fmt: skip
    report = _example("grpo_step").main([str(run)])
    assert report["samples"] == 4 and report["trained_tokens"] > 0
    assert report["max_abs_logprob_diff"] < 1e-4
