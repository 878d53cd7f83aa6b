"""The embedded model plays TextWorld end to end, locally and through `treegym serve`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.policy_fixtures import free_port
from treegym.envs.textworld_env import TextWorldEnv
from treegym.harness.episode import play_episode
from treegym.policies import ReActTemplate, SamplingParams
from treegym.policies.embedded import embedded_model_path
from treegym.policies.hf import HFPolicy
from treegym.policies.launcher import launched
from treegym.policies.sglang import SGLangPolicy

GAME = "tw-cooking:recipe=1,take=1,go=1,open=true,seed=10007"


def test_embedded_model_ships_loads_offline_and_records_how_it_was_made():
    path = embedded_model_path()
    weights = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    assert 0 < weights < 20 << 20  # a few MB
    training = json.loads((path / "training.json").read_text())
    evaluation = json.loads((path / "eval.json").read_text())
    assert training["parameters"] == evaluation["parameters"]
    assert 0.2 <= evaluation["success_rate"] <= 0.8  # a real but weak agent: mixed rewards
    code = (
        "from treegym.policies.hf import HFPolicy\n"
        "from treegym.policies import embedded_model_path\n"
        "print(HFPolicy(embedded_model_path()).identity()['parameters'])\n"
    )
    offline = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=offline, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip().splitlines()[-1]) == training["parameters"]


def _play(policy, template, game):
    env = TextWorldEnv(game, max_episode_steps=12)
    sampling = SamplingParams(max_new_tokens=48, temperature=1.0)
    return asyncio.run(play_episode(env, policy, template, seed=5, sampling=sampling))


@pytest.mark.slow
def test_same_transcript_through_hf_policy_and_through_the_server():
    from treegym.envs.textworld_games import make_game

    game = str(make_game(GAME))
    local = HFPolicy(embedded_model_path())
    template = ReActTemplate(local.tokenizer)
    mine = _play(local, template, game)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cli = Path(sys.executable).with_name("treegym")
    with launched([str(cli), "serve", "--engine", "hf", "--port", str(port)], url, timeout_s=300):
        client = SGLangPolicy(url)
        served = _play(client, template, game)
        asyncio.run(client.aclose())
    assert served.transcript.ids == mine.transcript.ids
    assert served.transcript.loss_mask == mine.transcript.loss_mask
    assert served.transcript.logprobs == pytest.approx(mine.transcript.logprobs, abs=1e-4)
    assert [t.action for t in served.transcript.turns] == [t.action for t in mine.transcript.turns]
    assert served.rewards == mine.rewards and served.end == mine.end
    assert len(mine.transcript.turns) >= 1
    # the server's prefix cache served the trunk of every turn after the first
    assert served.cached_tokens > 0.5 * served.prompt_tokens


@pytest.mark.slow
def test_both_samplers_run_end_to_end_with_the_embedded_model():
    from treegym.envs.textworld_games import make_game
    from treegym.harness import ChainSampler, ProcessExecutor, Runner, Task, TreeGRPOSampler

    policy = HFPolicy(embedded_model_path())
    template = ReActTemplate(policy.tokenizer)
    tasks = [Task(f"g{s}", {"task": str(make_game(GAME.replace("10007", str(s))))}, seed=s)
             for s in (10007, 10011)]  # fmt: skip

    async def go(sampler):
        executor = ProcessExecutor("treegym/TextWorld-v0", {"max_episode_steps": 12}, n_workers=2)
        runner = Runner(policy=policy, template=template, executor=executor, sampler=sampler,
                        sampling=SamplingParams(max_new_tokens=48, temperature=1.0))  # fmt: skip
        try:
            return [r async for r in runner.run(tasks)]
        finally:
            await executor.close()

    arms = [
        (ChainSampler(3), {"grpo", "node_value"}),
        (TreeGRPOSampler.published(), {"tree_grpo", "grpo", "node_value"}),
    ]
    for sampler, estimators in arms:
        for result in asyncio.run(go(sampler)):
            assert result.error is None and set(result.advantages) == estimators
            assert result.budget.leaves == sampler.trajectories_per_task
            assert result.budget.cached_tokens > 0  # siblings and later turns hit the prefix cache
