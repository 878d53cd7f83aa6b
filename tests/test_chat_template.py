"""Chat-template transcripts with SmolLM2's real tokenizer and template (issue 25).

Invariants checked on multi-turn episodes in every sampler: the ids of every node equal
``apply_chat_template`` of the whole conversation so far (under constrained choice the
generated ids are canonical), the loss mask covers exactly the generated ids, exported
logprobs recompute with plain transformers (same mask) to 1e-4, and a cut generation is closed
with the end token and the template's closing text at mask 0.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.chat_fixtures import smollm2_path, smollm2_tokenizer, tiny_chat_model  # noqa: F401
from tests.policy_fixtures import tiny_model  # noqa: F401
from treegym.config import build_sampler
from treegym.harness import InProcessExecutor, Runner, RunWriter, Task, load_run
from treegym.harness.tree import Tree
from treegym.policies import HFPolicy, SamplingParams
from treegym.policies.actions import MALFORMED_ACTION, ActionLine, Choice
from treegym.policies.chat import ChatTemplate
from treegym.policies.constraint import masked_logprobs
from treegym.policies.make_template import make_template
from treegym.policies.react import ReActTemplate
from treegym.policies.template import TemplateError

TOY = "treegym/ToyRooms-v0"
SAMPLERS = {
    "chain": ("chain", {"group_size": 2}),
    "tree_grpo": ("tree_grpo", {"m": 1, "n": 2, "l": 1, "k": 1}),
    "treepo": ("treepo", {"segment_len": 1, "max_width": 2, "div": 2, "max_depth": 12}),
    "trace": ("trace", {"roots": 1, "continuations": 1}),
    "selective": ("selective", {"inner": "chain", "inner.group_size": 2, "k": 1, "d_l": 0.0}),
}


def collect(policy, template, sampler, path, *, steps=3, max_new=16, temperature=1.0, tasks=1):
    """Run ``sampler`` on ToyRooms tasks into a run folder at ``path``; the loaded run."""

    async def go():
        executor = InProcessExecutor(TOY, {"max_episode_steps": steps})
        runner = Runner(policy=policy, template=template, executor=executor, sampler=sampler,
                        sampling=SamplingParams(max_new_tokens=max_new, temperature=temperature),
                        context_length=2048, fail_fast=True)  # fmt: skip
        try:
            with RunWriter.for_runner(path, runner, config={"env": TOY}) as writer:
                todo = [Task(f"toy-{i}", {"task": i}, seed=i) for i in range(tasks)]
                async for result in runner.run(todo):
                    writer.write(result)
        finally:
            await executor.close()

    asyncio.run(go())
    return load_run(path)


def partial(node) -> bool:
    """A TreePO segment that did not end its turn (rebuilt trees keep it in ``info``)."""
    return node.partial or bool(node.info.get("partial_turn"))


def turns(tree: Tree, leaf):
    """``(start node, ids generated before, node)`` per node on the leaf's path: a turn written
    in TreePO segments spans partial nodes, and its constraint continues their ids."""
    out, done = [], ()
    start = tree.root
    for node in tree.path(leaf):
        out.append((start, done, node))
        done = (*done, *node.generated_ids) if partial(node) else ()
        if not partial(node):
            start = node
    return out


def conversation(template: ChatTemplate, tree: Tree, node) -> list[dict[str, str]]:
    """The chat messages of the path to ``node`` (decoded turns, observations as shown)."""
    root = tree.root
    messages = [{"role": "system", "content": template.system_prompt},
                {"role": "user", "content": template.user_body(
                    root.observation, root.info.get("admissible_commands"))}]  # fmt: skip
    generated: tuple[int, ...] = ()
    for turn in tree.path(node):
        generated += turn.generated_ids
        if partial(turn):
            continue
        body = generated[:-1] if generated[-1:] == (template.end_id,) else generated
        messages.append({"role": "assistant", "content": template.decode(body)})
        messages.append({"role": "user", "content": template.user_body(
            turn.observation, turn.info.get("admissible_commands"))})  # fmt: skip
        generated = ()
    return messages


def reference_ids(tokenizer, messages) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                              return_dict=False))  # fmt: skip


@pytest.fixture(scope="module")
def tiny_policy(tiny_chat_model):  # noqa: F811
    policy = HFPolicy(tiny_chat_model, seed=0)
    yield policy
    policy.engine.close()


@pytest.fixture(scope="module")
def tiny_lm(tiny_chat_model):  # noqa: F811
    return AutoModelForCausalLM.from_pretrained(tiny_chat_model, dtype=torch.float32).eval()


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_keeps_the_chat_transcript_exact(name, tiny_policy, tiny_lm, tmp_path):
    template = ChatTemplate(tiny_policy.tokenizer, action_format=Choice())
    sampler = build_sampler(*SAMPLERS[name])
    run = collect(tiny_policy, template, sampler, tmp_path / name)
    trees = run.trees()
    nodes = [n for t in trees for n in t.nodes[1:]]
    assert len([n for n in nodes if not partial(n)]) >= 4  # multi-turn, several leaves
    if name == "treepo":
        assert any(partial(n) for n in nodes)  # turns written in segments: constraints continue
    for tree in trees:
        for leaf in tree.leaves():
            for start, _, node in turns(tree, leaf):
                if partial(node):
                    continue
                assert node.parse_error is None and node.action != MALFORMED_ACTION
                assert node.action in start.info["admissible_commands"]
                messages = conversation(template, tree, node)
                assert tree.input_ids(node) == reference_ids(tiny_policy.tokenizer, messages)
    check_samples(run, template, tiny_lm, temperature=1.0)


def check_samples(run, template, model, temperature: float) -> None:
    """Exported samples: loss mask exactly on generated ids, logprobs recomputed (masked)."""
    samples = run.samples
    trees = {(t.task_id, t.index): t for t in run.trees()}
    assert len(samples)
    for row in samples.itertuples():
        tree = trees[(row.task_id, row.tree_index)]
        leaf = tree.nodes[row.leaf_id]
        full = [*row.prompt_ids, *row.response_ids]
        assert full == tree.input_ids(leaf)
        with torch.no_grad():
            logits = model(torch.tensor([full])).logits[0]
        mask = [0] * len(row.response_ids)
        pos = len(row.prompt_ids)
        for start, done, node in turns(tree, leaf):
            gen = node.generated_ids
            admissible = start.info.get("admissible_commands")
            constraint = template.constraint(admissible, done)
            assert tuple(full[pos : pos + len(gen)]) == gen
            expect = masked_logprobs(logits[pos - 1 : pos - 1 + len(gen)], gen, constraint,
                                     temperature)  # fmt: skip
            off = pos - len(row.prompt_ids)
            got = torch.tensor(row.logprobs[off : off + len(gen)], dtype=torch.float32)
            assert torch.allclose(got, expect, atol=1e-4), (got, expect)
            mask[off : off + len(gen)] = [1] * len(gen)
            pos += len(gen) + len(node.closing_ids) + len(node.observation_ids)
        assert list(row.loss_mask) == mask


def test_transcript_per_turn_matches_apply_chat_template(smollm2_tokenizer):  # noqa: F811
    """Hand-made conversation: prompt + canonical turn ids + closing + observation deltas."""
    template = ChatTemplate(smollm2_tokenizer, action_format=Choice())
    obs = ["You are in a kitchen.", "You see a door.", "The door is open."]
    commands = [["go north", "take knife"], ["open door", "look"], ["go east"]]
    ids = template.prompt_ids(obs[0], commands[0])
    messages = [{"role": "system", "content": template.system_prompt},
                {"role": "user", "content": template.user_body(obs[0], commands[0])}]  # fmt: skip
    assert ids == reference_ids(smollm2_tokenizer, messages)
    for turn, command in enumerate(["take knife", "open door"]):
        generated = (*template.command_ids(command), template.end_id)
        reading = template.read(_result(generated))
        assert reading.action == command and reading.parse_error is None
        assert reading.closing_ids == template.closing_tail == tuple(smollm2_tokenizer.encode("\n"))
        ids = template.next_prompt(
            ids,
            generated,
            reading.closing_ids,
            template.observation_ids(obs[turn + 1], commands[turn + 1]),
        )
        messages += [
            {"role": "assistant", "content": command},
            {"role": "user", "content": template.user_body(obs[turn + 1], commands[turn + 1])},
        ]
        assert ids == reference_ids(smollm2_tokenizer, messages), f"turn {turn + 1}"  # fmt: skip


def _result(ids, finish="stop"):
    from treegym.policies.protocol import GenerateResult

    return GenerateResult(tuple(ids), (0.0,) * len(ids), finish, 10, 0, 0.0)


def test_end_token_is_the_models_and_a_cut_turn_is_closed(smollm2_tokenizer):  # noqa: F811
    template = ChatTemplate(smollm2_tokenizer, action_format=ActionLine())
    assert template.end_id == smollm2_tokenizer.convert_tokens_to_ids("<|im_end|>")
    cut = template.encode("Thought: I should look")
    reading = template.read(_result(cut, "length"))
    assert reading.closing_ids == (template.end_id, *template.closing_tail)
    assert reading.action == MALFORMED_ACTION and "Action:" in reading.parse_error
    whole = template.read(_result([*template.encode("Action: look"), template.end_id]))
    assert whole.action == "look" and whole.closing_ids == template.closing_tail


def test_cut_generations_end_with_the_end_token_at_mask_zero(tiny_policy, tmp_path):
    """A random model never writes the end token in 3 tokens: every turn is cut, closed with
    end token + "\\n" (mask 0), and the transcript is still the template's rendering."""
    template = ChatTemplate(tiny_policy.tokenizer, action_format=ActionLine())
    run = collect(tiny_policy, template, build_sampler("chain", {"group_size": 1}),
                  tmp_path / "cut", max_new=3, steps=2)  # fmt: skip
    (tree,) = run.trees()
    im_end = tuple(tiny_policy.tokenizer.encode("<|im_end|>\n", add_special_tokens=False))
    for node in tree.nodes[1:]:
        assert node.finish_reason == "length" and template.end_id not in node.generated_ids
        assert node.closing_ids == im_end
        assert node.action == MALFORMED_ACTION
    (row,) = run.samples.itertuples()
    leaf = tree.nodes[row.leaf_id]
    mask = []
    for node in tree.path(leaf):
        mask += [1] * len(node.generated_ids) + [0] * (
            len(node.closing_ids) + len(node.observation_ids)
        )
    assert list(row.loss_mask) == mask  # fmt: skip


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_smollm2_plays_with_constrained_choice_and_logprobs_recompute(name, smollm2_path, tmp_path):  # noqa: F811
    """The real model, every sampler (≈5 s each here): every turn one admissible
    command (0 malformed), logprobs recomputed by plain transformers under the same mask to
    1e-4, transcripts equal apply_chat_template at every turn."""
    policy = HFPolicy(smollm2_path, seed=0)
    try:
        template = ChatTemplate(policy.tokenizer, action_format=Choice())
        run = collect(policy, template, build_sampler(*SAMPLERS[name]), tmp_path / "smol",
                      steps=3, max_new=12)  # fmt: skip
    finally:
        policy.engine.close()
    trees = run.trees()
    for tree in trees:
        for leaf in tree.leaves():
            for start, _, node in turns(tree, leaf):
                if partial(node):
                    continue
                assert node.action in start.info["admissible_commands"]
                assert node.parse_error is None and node.finish_reason == "stop"
                assert tree.input_ids(node) == reference_ids(
                    policy.tokenizer, conversation(template, tree, node)
                )
    model = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32).eval()
    check_samples(run, template, model, temperature=1.0)
    manifest = json.loads((tmp_path / "smol" / "manifest.json").read_text())
    assert manifest["config"]["template"]["class"] == "ChatTemplate"


QWEN3_LIKE = (  # drops past reasoning: a rendered turn changes once a later user turn exists
    "{%- for m in messages %}{%- if m.role == 'assistant' and not loop.last %}"
    "{%- set c = m.content.split('</think>')[-1] %}{%- else %}{%- set c = m.content %}"
    "{%- endif %}{{- '<|im_start|>' + m.role + '\\n' + c + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
NUMBERED = (  # history-dependent: each user turn carries its position in the conversation
    "{%- for m in messages %}{%- if m.role == 'user' %}{%- set c = loop.index|string + ': ' "
    "+ m.content %}{%- else %}{%- set c = m.content %}{%- endif %}"
    "{{- '<|im_start|>' + m.role + '\\n' + c + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def test_templates_that_are_not_prefix_stable_are_refused(smollm2_tokenizer):  # noqa: F811
    with pytest.raises(TemplateError) as err:
        ChatTemplate(smollm2_tokenizer, chat_template=QWEN3_LIKE)
    message = str(err.value)
    assert "not prefix-stable" in message and "assistant turn 1 ('<think>x</think>answer')" in (
        message
    )
    assert "--template react" in message and "chat:FILE" in message and "\n" not in message
    with pytest.raises(
        TemplateError, match=r"same observation differently after 2 turns .*--template react"
    ):
        ChatTemplate(smollm2_tokenizer, chat_template=NUMBERED)


def test_a_tokenizer_without_chat_template_is_refused(tiny_model):  # noqa: F811
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    with pytest.raises(TemplateError, match="no chat template: use --template react, or give a"):
        ChatTemplate(tokenizer)
    with pytest.raises(TemplateError, match="no chat template"):
        make_template(tokenizer, tiny_model, "chat")
    assert isinstance(make_template(tokenizer, tiny_model), ReActTemplate)  # the default


def test_template_file_and_defaults(smollm2_tokenizer, smollm2_path, tmp_path):  # noqa: F811
    chosen = make_template(smollm2_tokenizer, smollm2_path)
    assert isinstance(chosen, ChatTemplate) and chosen.action_format.spec == "choice"
    unconstrained = make_template(smollm2_tokenizer, smollm2_path, can_constrain=False)
    assert unconstrained.action_format.spec == "action"
    file = tmp_path / "chatml.jinja"
    file.write_text((smollm2_path / "chat_template.jinja").read_text())
    from_file = make_template(smollm2_tokenizer, None, f"chat:{file}", "tags")
    assert from_file.prompt_ids("x", ["look"]) == ChatTemplate(
        smollm2_tokenizer, action_format=from_file.action_format
    ).prompt_ids("x", ["look"])
    with pytest.raises(TemplateError, match="chat template file not found"):
        make_template(smollm2_tokenizer, None, f"chat:{tmp_path / 'nope.jinja'}")
    with pytest.raises(TemplateError, match=r"lacks <\|pad\|>, <\|system\|>.*--template chat"):
        make_template(smollm2_tokenizer, smollm2_path, "react")
    with pytest.raises(TemplateError, match="unknown template 'chatml'"):
        make_template(smollm2_tokenizer, None, "chatml")


def test_choice_needs_admissible_commands(smollm2_tokenizer):  # noqa: F811
    template = ChatTemplate(smollm2_tokenizer, action_format=Choice())
    for admissible in (None, []):
        with pytest.raises(TemplateError, match="needs the env's admissible commands"):
            template.prompt_ids("You are in a room.", admissible)
        with pytest.raises(TemplateError, match="needs the env's admissible commands"):
            template.constraint(admissible)
    assert ChatTemplate(smollm2_tokenizer, action_format=ActionLine()).constraint(None) is None
