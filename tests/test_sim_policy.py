"""The simulated engine (``--policy sim:...``): its spec, answers the env accepts with real
token ids, the batch limit, the prefix cache's cached-token reports, and a collection through
``treegym collect``."""

from __future__ import annotations

import asyncio

import pytest
from transformers import AutoTokenizer
from typer.testing import CliRunner

from tests.policy_fixtures import tiny_model  # noqa: F401 - fixture
from treegym.cli import app
from treegym.config import ConfigError, parse_policy
from treegym.harness import load_run
from treegym.policies import GenerateRequest, ReActTemplate, SamplingParams
from treegym.policies.sim import BLOCK, SimConfig, SimPolicy

COMMANDS = ["go north", "open chest", "take coin from chest"]
FAST = SimConfig(tps=1e9, prefill=1e12)


@pytest.fixture
def template(tiny_model):  # noqa: F811
    return ReActTemplate(AutoTokenizer.from_pretrained(tiny_model))


def _request(template, prompt, seed, commands=COMMANDS, max_new=48):
    return GenerateRequest(tuple(prompt), SamplingParams(max_new_tokens=max_new, seed=seed),
                           hints={"admissible_commands": commands})  # fmt: skip


def test_spec_parses_and_bad_specs_are_one_line():
    c = SimConfig.parse("tps=5000, batch=8,latency=0.01,cache=off,tokens=32")
    assert (c.tps, c.batch, c.latency, c.cache, c.tokens) == (5000, 8, 0.01, False, 32)
    assert SimConfig.parse("") == SimConfig() and c.step_s == 8 / 5000
    assert parse_policy("sim:batch=4").target == "batch=4" and parse_policy("sim").kind == "sim"
    for spec, words in (("sim:speed=3", "'speed=3' is not KEY=VALUE"),
                        ("sim:tps=fast", "tps takes a number"),
                        ("sim:batch=0", "batch must be >= 1"),
                        ("sim:cache=yes", "cache is on or off"),
                        ("sim:tps=-1", "tps must be > 0")):  # fmt: skip
        with pytest.raises(ConfigError, match=words) as err:
            parse_policy(spec)
        assert "\n" not in str(err.value)


def test_answers_are_admissible_turns_of_the_configured_length(template):
    policy = SimPolicy(template, SimConfig(tps=1e9, tokens=24))
    prompt = template.prompt_ids("You are in a hall.", COMMANDS)
    results = asyncio.run(policy.generate([_request(template, prompt, s) for s in range(12)]))
    actions = {template.read(r).action for r in results}
    assert actions == set(COMMANDS)  # uniform picks by seed reach every command
    for r in results:
        assert r.finish_reason == "stop" and r.output_ids[-1] == template.end_id
        assert 16 <= len(r.output_ids) <= 24 and len(r.logprobs) == len(r.output_ids)
        assert template.read(r).parse_error is None
    again = asyncio.run(policy.generate([_request(template, prompt, 5)]))[0]
    assert again.output_ids == results[5].output_ids  # the seed decides
    cut = asyncio.run(policy.generate([_request(template, prompt, 5, max_new=4)]))[0]
    assert cut.finish_reason == "length" and cut.output_ids == results[5].output_ids[:4]
    with pytest.raises(Exception, match="needs hints with admissible_commands"):
        asyncio.run(policy.generate([_request(template, prompt, 1, commands=[])]))


def test_the_batch_limit_queues_requests(template):
    policy = SimPolicy(template, SimConfig(tps=2000, batch=2, tokens=8))
    prompt = template.prompt_ids("A hall.", COMMANDS)

    async def go():
        await asyncio.gather(*(policy.generate([_request(template, prompt, s)]) for s in range(5)))

    asyncio.run(go())
    assert policy.engine.peak == 2 and policy.engine.requests == 5
    assert policy.engine.queue_s > 0 and policy.engine.running == 0


@pytest.mark.parametrize("cache", [True, False])
def test_prefix_cache_reports_the_cached_blocks(template, cache):
    policy = SimPolicy(template, SimConfig(tps=1e9, prefill=1e12, cache=cache))
    prompt = template.prompt_ids("You are in a hall. " * 4, COMMANDS)
    together = asyncio.run(policy.generate([_request(template, prompt, s) for s in range(3)]))
    assert [r.cached_tokens for r in together] == [0, 0, 0]  # none before them
    assert policy.engine.computed_prompt_tokens == len(prompt)  # the shared prompt once
    turn = together[0].output_ids
    nxt = [*prompt, *turn, *template.observation_ids("A kitchen.", COMMANDS)]
    second = asyncio.run(policy.generate([_request(template, nxt, 9)]))[0]
    held = (len(prompt) + len(turn)) // BLOCK * BLOCK
    assert second.cached_tokens == (held if cache else 0)
    assert second.prompt_tokens == len(nxt)


def test_collect_with_the_simulated_engine(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["collect", "--env", "treegym/ToyRooms-v0", "-k",
                                   "max_episode_steps=6", "--policy",
                                   "sim:tps=1000000,batch=64,latency=0.001", "--workers", "0",
                                   "--n-tasks", "3", "--out", str(out), "--quiet"],
                             terminal_width=200)  # fmt: skip
    assert res.exit_code == 0, res.stdout + res.stderr
    run = load_run(out)
    assert run.complete and len(run.samples) == 3 * 6
    assert run.manifest["policy"]["policy"] == "sim" and run.manifest["policy"]["batch"] == 64
    assert run.manifest["budget"]["cached_tokens"] > 0  # later turns extend cached prompts
    assert (run.nodes.parse_error.isna() | (run.nodes.node_id == 0)).all()
