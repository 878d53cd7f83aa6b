"""The ReAct template and token transcript: exact ids, masks, logprobs, parsing, guards."""

from __future__ import annotations

import asyncio
import math

import pytest

from tests.policy_fixtures import tiny_model, toy_texts  # noqa: F401 - fixture
from treegym.envs.toy import ToyRoomsEnv
from treegym.harness.episode import play_episode
from treegym.policies import (
    MALFORMED_ACTION,
    GenerateResult,
    Policy,
    ReActTemplate,
    SamplingParams,
    ScriptedPolicy,
    parse_action,
    tidy_observation,
)
from treegym.policies.tokenizer import train_react_tokenizer


@pytest.mark.parametrize(
    ("text", "action", "error"),
    [
        ("Thought: go\nAction: go east<|end|>", "go east", None),
        ("Action: look\nThought: no wait\nAction:  take key  \n", "take key", None),
        ("Thought: I am lost", MALFORMED_ACTION, "no 'Action:' line in the generation"),
        ("Thought: x\nAction:   \n", MALFORMED_ACTION, "empty action after 'Action:'"),
        ("Action: open chest<|end|><|end|>", "open chest", None),
    ],
)
def test_parse_action(text, action, error):
    assert parse_action(text) == (action, error)


def test_tidy_observation_drops_banner_prompt_and_status_but_keeps_words():
    raw = (
        "\n\n                    ________  ________\n                   |        \\|        \\\n"
        "| $$   | $$  \\     >$$  $$    | $$\n\nYou are hungry! Let's cook.\n\n-= Kitchen =-\n"
        "A fridge.\n\n>                                          -= Kitchen =-0/1\n\n> "
    )
    assert tidy_observation(raw) == "You are hungry! Let's cook.\n\n-= Kitchen =-\nA fridge."


class Recorder(Policy):
    """Wraps a policy and records every request it sees."""

    def __init__(self, inner: Policy) -> None:
        self.inner, self.requests = inner, []

    async def generate(self, requests):
        self.requests += list(requests)
        return await self.inner.generate(requests)


def _template(path) -> ReActTemplate:
    from transformers import AutoTokenizer

    return ReActTemplate(AutoTokenizer.from_pretrained(path))


def test_transcript_invariants_with_scripted_policy(tiny_model):  # noqa: F811
    template = _template(tiny_model)
    policy = Recorder(ScriptedPolicy(template, "expert", epsilon=0.3, seed=1))
    env = ToyRoomsEnv(max_episode_steps=15)
    ep = asyncio.run(play_episode(env, policy, template, seed=4))
    t = ep.transcript
    assert len(t.ids) == len(t.loss_mask) == len(t.logprobs)
    # every prompt the policy saw is exactly the transcript up to that turn
    offset = len(t.prompt_ids)
    for req, turn in zip(policy.requests, t.turns, strict=True):
        assert list(req.input_ids) == t.ids[: len(req.input_ids)]
        assert len(req.input_ids) == offset
        offset += len(turn.generated_ids) + len(turn.closing_ids) + len(turn.observation_ids)
    assert offset == len(t.ids)
    # the loss mask covers exactly the generated ids, with one logprob each
    generated = [i for turn in t.turns for i in turn.generated_ids]
    assert [i for i, m in zip(t.ids, t.loss_mask, strict=True) if m] == generated
    assert sum(t.loss_mask) == sum(len(turn.logprobs) for turn in t.turns)
    assert all(lp == 0.0 for lp, m in zip(t.logprobs, t.loss_mask, strict=True) if not m)
    # the env received the parsed actions
    assert env.snapshot().actions == tuple(turn.action for turn in t.turns)
    assert ep.end in ("terminated", "truncated")


def test_scripted_logprobs_are_the_choice_probability(tiny_model):  # noqa: F811
    template = _template(tiny_model)
    hints = {"admissible_commands": ["a", "b", "c", "d"], "expert_plan": ["b"]}
    from treegym.policies import GenerateRequest

    req = GenerateRequest((1, 2), SamplingParams(seed=0), hints=hints)
    (expert,) = asyncio.run(ScriptedPolicy(template, "expert", epsilon=0.0).generate([req]))
    assert expert.logprobs[0] == 0.0 and template.decode(expert.output_ids).endswith(
        "Action: b<|end|>"
    )
    (rand,) = asyncio.run(ScriptedPolicy(template, "random").generate([req]))
    assert math.isclose(rand.logprobs[0], math.log(0.25)) and set(rand.logprobs[1:]) == {0.0}
    noisy = ScriptedPolicy(template, "expert", epsilon=0.4)
    action, prob, _ = noisy.choose(hints, __import__("random").Random(0))
    assert math.isclose(prob, 0.6 + 0.1 if action == "b" else 0.1)


class Scripted(Policy):
    """Answers with fixed text pieces (to drive the transcript through edge cases)."""

    def __init__(self, template: ReActTemplate, texts: list[str], finish: str = "stop") -> None:
        self.template, self.texts, self.finish = template, list(texts), finish

    async def generate(self, requests):
        ids = tuple(self.template.encode(self.texts.pop(0)))
        return [
            GenerateResult(ids, (-0.5,) * len(ids), self.finish, len(requests[0].input_ids), 0, 0.0)
        ]


def test_malformed_generation_sends_the_marker_and_records_why(tiny_model):  # noqa: F811
    template = _template(tiny_model)
    policy = Scripted(template, ["Thought: hmm<|end|>", "Thought: ok\nAction: look<|end|>"] * 10)
    env = ToyRoomsEnv(max_episode_steps=2)
    ep = asyncio.run(play_episode(env, policy, template, seed=0))
    first, second = ep.transcript.turns
    assert first.action == MALFORMED_ACTION and first.parse_error.startswith("no 'Action:'")
    assert env.snapshot().actions[0] == MALFORMED_ACTION
    assert template.decode(first.observation_ids).startswith("\n<|user|>Nothing happens.")
    assert second.action == "look" and second.parse_error is None


def test_cut_generation_gets_a_closing_end_token_outside_the_mask(tiny_model):  # noqa: F811
    template = _template(tiny_model)
    policy = Scripted(template, ["Thought: a very long thought"] * 3, finish="length")
    ep = asyncio.run(play_episode(ToyRoomsEnv(max_episode_steps=3), policy, template, seed=0))
    t = ep.transcript
    turn = t.turns[0]
    assert turn.closing_ids == (template.end_id,) and turn.finish_reason == "length"
    start = len(t.prompt_ids) + len(turn.generated_ids)
    assert t.ids[start] == template.end_id and t.loss_mask[start] == 0


def test_context_guard_ends_the_episode_as_truncated_by_context(tiny_model):  # noqa: F811
    template = _template(tiny_model)
    policy = ScriptedPolicy(template, "random", seed=0)
    env = ToyRoomsEnv(max_episode_steps=50)
    prompt_len = len(template.prompt_ids(*env.reset(seed=0)[:1]))
    ep = asyncio.run(
        play_episode(
            env,
            policy,
            template,
            seed=0,
            context_length=prompt_len + 200,
            sampling=SamplingParams(max_new_tokens=48),
        )
    )
    assert ep.end == "context"
    assert len(ep.transcript.ids) + 48 > prompt_len + 200 >= len(ep.transcript.ids)


def test_a_model_folder_carries_the_template_it_was_trained_with(tmp_path):
    from treegym.policies.react import TEMPLATE_FILE

    tok = train_react_tokenizer(toy_texts(3), vocab_size=300)
    assert ReActTemplate.for_model(tok, tmp_path).show_admissible  # no file: the defaults
    (tmp_path / TEMPLATE_FILE).write_text('{"show_admissible": false}')
    template = ReActTemplate.for_model(tok, tmp_path)
    assert "Admissible" not in template.prompt_text("You are in a hall.", ["go east"])
    (tmp_path / TEMPLATE_FILE).write_text('{"hide_admissible": "^go to "}')
    text = ReActTemplate.for_model(tok, tmp_path).prompt_text("Hall.", ["go to desk 1", "look"])
    assert text.count("Admissible commands: look") == 1 and "go to desk" not in text
    text = ReActTemplate.for_model(tok, tmp_path).prompt_text("Hall.", ["go to desk 1"])
    assert "Admissible" not in text  # nothing left to list: no empty list line
    (tmp_path / TEMPLATE_FILE).write_text('{"show_admisible": false}')
    with pytest.raises(ValueError, match=r"unknown template settings \['show_admisible'\]"):
        ReActTemplate.for_model(tok, tmp_path)
