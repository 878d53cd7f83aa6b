"""vLLM as a real second engine: ``treegym serve --engine vllm`` and ``VLLMPolicy`` against a
real vLLM server on the CPU (from ``.venv-vllm``; ``bash scripts/setup_vllm.sh``).

The server takes 1–2 minutes to start the first time (torch.compile; cached afterwards), so one
server serves the whole module. Without vLLM the tests skip and say how to install it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.policy_fixtures import free_port
from treegym.policies import GenerateRequest, PolicyError, SamplingParams
from treegym.policies.embedded import embedded_model_path
from treegym.policies.launcher import VLLM_SETUP_HINT, vllm_python, wait_healthy
from treegym.policies.vllm import VLLMPolicy

try:
    VLLM = vllm_python()
except PolicyError:
    VLLM = None
needs_vllm = pytest.mark.skipif(VLLM is None, reason=VLLM_SETUP_HINT)
TREEGYM = str(Path(sys.executable).parent / "treegym")


def _untied(src: Path, dst: Path, noise: float = 0.0) -> Path:
    """``src`` with its own lm_head (vLLM reloads only untied models in place), plus noise."""
    from transformers import AutoModelForCausalLM

    tied = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    config = tied.config
    config.tie_word_embeddings = False
    model = AutoModelForCausalLM.from_config(config)
    state = tied.state_dict()
    state["lm_head.weight"] = state["model.embed_tokens.weight"].clone()
    model.load_state_dict(state)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * noise)
    model.to(torch.float16).save_pretrained(dst)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / name, dst / name)
    return dst


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """An untied copy of the embedded model."""
    return _untied(embedded_model_path(), tmp_path_factory.mktemp("vllm-model") / "model")


def _serve(model: str, max_model_len: int):
    """``treegym serve --engine vllm --model MODEL``: yields its URL, then stops it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([TREEGYM, "serve", "--engine", "vllm", "--model", model,
                             "--port", str(port), "--max-model-len", str(max_model_len)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_healthy(url, 600, proc)
    except PolicyError:
        proc.kill()
        raise AssertionError(proc.stderr.read().decode()[-3000:]) from None
    yield url
    proc.terminate()  # SIGTERM: treegym serve stops vLLM too
    proc.wait(60)


@pytest.fixture(scope="module")
def server(model):
    yield from _serve(str(model), 2048)


def _hf_logprobs(model: Path, prompt, out, temperature: float) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    with torch.inference_mode():
        logits = m(input_ids=torch.tensor([[*prompt, *out]])).logits[0, len(prompt) - 1 : -1]
        logp = torch.log_softmax(logits / temperature, dim=-1)
        return logp.gather(1, torch.tensor(out)[:, None]).squeeze(1)


def _prompt(model: Path, text: str) -> tuple[int, ...]:
    from transformers import AutoTokenizer

    return tuple(AutoTokenizer.from_pretrained(model).encode(text, add_special_tokens=False))


@needs_vllm
def test_tokens_logprobs_seeds_and_prefix_cache(server, model):
    policy = VLLMPolicy(server)
    trunk = "<|system|>play<|end|>\n<|user|>" + "-= Kitchen =- You see a fridge. " * 30
    prompt = _prompt(model, trunk + "<|end|>\n<|assistant|>")
    sampling = [SamplingParams(max_new_tokens=24, temperature=0.8, seed=s) for s in range(3)]
    reqs = [GenerateRequest(prompt, s) for s in sampling]

    async def go():
        first = await policy.generate(reqs)
        again = await policy.generate(reqs)
        await policy.aclose()
        return first, again

    first, again = asyncio.run(go())
    assert [r.output_ids for r in first] == [r.output_ids for r in again]  # seeds hold
    assert len({r.output_ids for r in first}) > 1
    for res in first:
        ref = _hf_logprobs(model, prompt, res.output_ids, 0.8)
        assert (ref - torch.tensor(res.logprobs)).abs().max() < 1e-3  # processed_logprobs
        assert res.prompt_tokens == len(prompt) and res.finish_reason in ("stop", "length")
    # vLLM caches whole blocks: the repeated prompt is served from the cache in block multiples
    assert all(0 < r.cached_tokens < len(prompt) for r in again)


def _collect(url: str, out: Path, *extra: str):
    """``treegym collect --policy vllm:URL`` (chain G=2, one task, 3 steps); the run."""
    from typer.testing import CliRunner

    from treegym.cli import app
    from treegym.harness import load_run

    args = ["collect", "--policy", f"vllm:{url}", *extra, "--n-tasks", "1", "--sampler", "chain",
            "-p", "group_size=2", "-k", "max_episode_steps=3", "--out", str(out), "-q"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.stdout + res.stderr
    return load_run(out)


@needs_vllm
def test_collect_with_the_vllm_policy(server, tmp_path):
    run = _collect(server, tmp_path / "run")
    assert len(run.samples) == 2 and run.manifest["policy"]["policy"] == "vllm"
    row = run.samples.iloc[0]
    assert sum(row["loss_mask"]) > 0 and len(row["logprobs"]) == len(row["loss_mask"])


@needs_vllm
def test_weight_update_through_vllms_own_routes(server, model, tmp_path):
    prompt = _prompt(model, "<|system|>play<|end|>\n<|user|>look<|end|>\n<|assistant|>")
    req = GenerateRequest(prompt, SamplingParams(max_new_tokens=8, temperature=1.0, seed=1))
    step1 = _untied(embedded_model_path(), tmp_path / "step1", noise=0.05)

    async def go():
        policy = VLLMPolicy(server)
        before = (await policy.generate([req]))[0]
        version = await policy.load_weights(step1, "step-1")
        after = (await policy.generate([req]))[0]
        with pytest.raises(PolicyError, match="ties its input and output embeddings"):
            await policy.load_weights(embedded_model_path())
        still = (await policy.generate([req]))[0]
        await policy.aclose()
        return before, version, after, still

    before, version, after, still = asyncio.run(go())
    assert before.weight_version is None and version == "step-1"
    assert after.weight_version == still.weight_version == "step-1"
    ref = _hf_logprobs(step1, prompt, after.output_ids, 1.0)
    assert (ref - torch.tensor(after.logprobs)).abs().max() < 1e-4  # exactly the new weights
    assert (_hf_logprobs(model, prompt, after.output_ids, 1.0) - ref).abs().max() > 1e-2
    assert still.output_ids == after.output_ids  # the refused update changed nothing


def test_no_server_and_no_vllm_are_one_line_errors(tmp_path):
    policy = VLLMPolicy("http://127.0.0.1:9", retries=1)
    with pytest.raises(PolicyError, match=r"no vLLM server answers at http://127\.0\.0\.1:9"):
        asyncio.run(policy.generate([GenerateRequest((1, 2))]))
    asyncio.run(policy.aclose())
    env = dict(os.environ, TREEGYM_VLLM_PYTHON=sys.executable)  # treegym's venv: no vllm
    proc = subprocess.run([TREEGYM, "serve", "--engine", "vllm", "--port", str(free_port())],
                          capture_output=True, text=True, env=env, cwd=tmp_path)  # fmt: skip
    assert proc.returncode != 0
    assert "vLLM is not installed: `bash scripts/setup_vllm.sh`" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


def _generate(server: str, reqs: list[GenerateRequest]):
    async def go():
        policy = VLLMPolicy(server)
        try:
            return await policy.generate(reqs)
        finally:
            await policy.aclose()

    return asyncio.run(go())


def _constrained(server, model, action_format, commands, max_new_tokens: int, n: int):
    """``n`` seeded T=1 turns of a one-room prompt under ``action_format``'s constraint:
    ``(template, prompt, results)``."""
    from transformers import AutoTokenizer

    from treegym.policies.react import ReActTemplate

    template = ReActTemplate(AutoTokenizer.from_pretrained(model), action_format=action_format)
    prompt = tuple(template.prompt_ids("You are in a room with a chest.", commands))
    constraint = template.constraint(commands)
    reqs = [GenerateRequest(prompt, SamplingParams(max_new_tokens=max_new_tokens, seed=s,
                                                   stop_token_ids=(template.end_id,)),
                            constraint=constraint) for s in range(n)]  # fmt: skip
    return template, prompt, _generate(server, reqs)


@needs_vllm
def test_constrained_choice_through_structured_outputs(server, model):
    """``structured_outputs.choice``: every sample spells one admissible command and ends with
    the end token; its logprobs are under the masked distribution (never below the model's
    unmasked ones, and above them where the mask removed mass)."""
    from treegym.policies.actions import Choice

    commands = ["go east", "take key", "open chest", "look"]
    template, prompt, results = _constrained(server, model, Choice(), commands, 16, 4)
    lifted = 0.0
    for res in results:
        reading = template.read(res)
        assert reading.action in commands and reading.parse_error is None
        assert res.output_ids[-1] == template.end_id
        plain = _hf_logprobs(model, prompt, res.output_ids, 1.0)
        got = torch.tensor(res.logprobs)
        assert (got >= plain - 1e-3).all()
        lifted = max(lifted, float((got - plain).max()))
    assert lifted > 0.01


@needs_vllm
def test_react_choice_thinks_freely_then_names_an_admissible_command(server, model):
    """``react-choice`` through ``structured_outputs.regex``: one free line, then ``Action:``
    and an admissible command, then the end token (a turn cut by ``max_new_tokens`` is a
    prefix of that)."""
    from treegym.policies.actions import ReActChoice

    commands = ["go east", "take key (rusty)", "open chest", "look"]
    template, _, results = _constrained(server, model, ReActChoice(), commands, 64, 6)
    finished = 0
    for res in results:
        reading = template.read(res)
        if res.output_ids[-1] != template.end_id:
            _thought, _, rest = reading.text.partition("\n")
            assert any(f"Action: {c}".startswith(rest) for c in commands), reading.text
            continue
        finished += 1
        assert reading.action in commands and reading.parse_error is None, reading.text
        _thought, action_line = reading.text.removesuffix("<|end|>").split("\n")
        assert action_line == f"Action: {reading.action}"
    assert finished >= 3


@needs_vllm
def test_many_long_seeded_prompts_at_once_leave_the_server_up(server):
    """32 seeded prompts of 400 tokens at once: with chunked prefill vLLM 0.32's CPU engine
    died on them (``CPU Generator does not use offset``); ``treegym serve`` prefills whole."""
    import random

    rng = random.Random(0)
    reqs = [GenerateRequest(tuple(rng.randrange(5, 2000) for _ in range(400)),
                            SamplingParams(max_new_tokens=8, seed=i, ignore_eos=True))
            for i in range(32)]  # fmt: skip
    assert [len(r.output_ids) for r in _generate(server, reqs)] == [8] * 32


@pytest.fixture(scope="module")
def smollm2_server():
    """``treegym serve --engine vllm --model smollm2``: a real chat model on the vLLM engine."""
    from treegym.policies.smollm2 import SmolLM2Unavailable, smollm2_model_path

    try:
        path = smollm2_model_path()
    except SmolLM2Unavailable as exc:
        pytest.skip(str(exc))
    for url in _serve("smollm2", 4096):
        yield url, path


@needs_vllm
def test_smollm2_on_the_vllm_engine_plays_its_chat_template_with_constrained_choice(
    smollm2_server, tmp_path
):
    url, path = smollm2_server
    run = _collect(url, tmp_path / "run", "--tokenizer", str(path))
    collect = run.manifest["config"]["collect"]
    assert (collect["template"], collect["action_format"]) == ("chat", "choice")  # the defaults
    turns = run.nodes[run.nodes["depth"] > 0]
    assert 2 <= len(turns) <= 6 and (turns["finish_reason"] == "stop").all()
    assert not turns["parse_error"].fillna("").astype(bool).any()  # constrained: none malformed
    assert (turns["action"].str.len() > 0).all()
