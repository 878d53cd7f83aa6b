"""Engine throughput: HFPolicy's continuous-batching engine against the HFPolicy it replaced,
vLLM on the CPU and a bare batched transformers decode, side by side in each repetition.

Two workloads:

* synthetic — N prompts of L random tokens, ``new`` tokens each at T=1 (``ignore_eos``, so
  every arm generates exactly the same number of tokens), all sent at once: distinct prompts,
  and one prompt shared by all (the children of a tree node);
* collect — a real Tree-GRPO collection (published setting) of held-out embedded-mix
  TextWorld tasks through the runner and two env worker processes: generated tokens per second
  of collection wall time.

Arms: ``HFPolicy`` (this engine), ``HFPolicy before`` (the implementation of commit 7d3cc4d,
loaded from git history: per-group decode under one lock, row-by-row sampling, whole-KV
prefix-cache copies), ``vLLM`` (``treegym serve --engine vllm`` = vLLM 0.32's own server from
``.venv-vllm``, through ``VLLMPolicy``; skipped with a note when vLLM is not installed), and
``bare batched forward`` (one transformers forward per step over the whole batch with a
``DynamicCache``, vectorised sampling, no scheduling, synthetic distinct prompts only). Every
prefix cache is flushed before each arm of each repetition.

``python bench/engine_speed.py [--size full]``
"""

from __future__ import annotations

import asyncio
import importlib.util
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from bench_common import Chart, Section, Spread, heldout_tasks, ratios, size_cli

from treegym.harness import ProcessExecutor, Runner, TreeGRPOSampler
from treegym.policies import GenerateRequest, PolicyError, ReActTemplate, SamplingParams
from treegym.policies.embedded import embedded_model_path
from treegym.policies.hf import HFPolicy

SLUG = "engine_speed"
BEFORE_COMMIT = "7d3cc4d"


@dataclass(frozen=True)
class Size:
    prompts: int
    prompt_len: int
    new: int
    repeats: int
    collect_tasks: int
    max_episode_steps: int


SIZES = {"smoke": Size(4, 48, 8, 2, 1, 2), "full": Size(32, 400, 48, 3, 16, 20)}
ARMS = ("HFPolicy", "HFPolicy before", "vLLM", "bare batched forward")


def before_policy_class() -> Any:
    """``HFPolicy`` as of :data:`BEFORE_COMMIT`, imported from git history into a temp package."""
    root = Path(__file__).resolve().parents[1]
    pkg = Path(tempfile.mkdtemp()) / "before_policies"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in ("hf.py", "prefix_cache.py"):
        text = subprocess.run(
            ["git", "-C", str(root), "show", f"{BEFORE_COMMIT}:policies/{name}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        text = text.replace("from .protocol import", "from treegym.policies.protocol import")
        (pkg / name).write_text(text)
    spec = importlib.util.spec_from_file_location(
        "before_policies", pkg / "__init__.py", submodule_search_locations=[str(pkg)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["before_policies"] = module
    spec.loader.exec_module(module)
    return importlib.import_module("before_policies.hf").HFPolicy


def synthetic(size: Size, shared: bool, rep: int, vocab: int) -> list[GenerateRequest]:
    rng = random.Random(f"{rep}:{shared}")
    one = tuple(rng.randrange(5, vocab) for _ in range(size.prompt_len))
    prompts = [
        one if shared else tuple(rng.randrange(5, vocab) for _ in one) for _ in range(size.prompts)
    ]
    return [
        GenerateRequest(p, SamplingParams(max_new_tokens=size.new, seed=i, ignore_eos=True))
        for i, p in enumerate(prompts)
    ]


async def timed(policy: Any, reqs: list[GenerateRequest]) -> float:
    """Generated tokens per second of one call with every request."""
    t0 = time.perf_counter()
    results = await policy.generate(reqs)
    return sum(len(r.output_ids) for r in results) / (time.perf_counter() - t0)


def bare_forward(model: Any, reqs: list[GenerateRequest]) -> float:
    """A batched prefill and decode loop with no engine around it (equal-length prompts)."""
    from transformers import DynamicCache

    steps = reqs[0].sampling.max_new_tokens
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        x = torch.tensor([list(r.input_ids) for r in reqs])
        for _ in range(steps):
            logits = model(input_ids=x, cache=cache, use_cache=True, logits_to_keep=1).logits
            x = torch.multinomial(torch.softmax(logits[:, -1].float(), -1), 1, generator=gen)
    return len(reqs) * steps / (time.perf_counter() - t0)


def vllm_server(model: Path) -> tuple[Any, str]:
    """``(context manager running treegym serve --engine vllm, its URL)``, or ``(None, why
    not)`` when vLLM is not installed."""
    import socket

    from treegym.policies.launcher import launched, vllm_command, vllm_env, vllm_python

    try:
        python = vllm_python()
    except PolicyError as exc:
        return None, str(exc)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    command = vllm_command(python, str(model), "127.0.0.1", port, ["--max-model-len", "2048"])
    return launched(command, url, env=vllm_env()), url


async def flush(arm: str, policy: Any) -> None:
    if arm == "HFPolicy":
        await asyncio.wrap_future(policy.engine.when_idle(policy.engine.flush_cache))
    elif arm == "HFPolicy before":
        policy.cache.clear()
    elif arm == "vLLM":
        await policy.http.post(policy.url + "/reset_prefix_cache", None, want_json=False)


async def collect_rate(policy: Any, template: ReActTemplate, tasks: list, steps: int) -> float:
    """Generated tokens per second of a Tree-GRPO collection's wall time."""
    executor = ProcessExecutor("treegym/TextWorld-v0", {"max_episode_steps": steps}, n_workers=2)
    runner = Runner(
        policy=policy,
        template=template,
        executor=executor,
        sampler=TreeGRPOSampler.published(),
        sampling=SamplingParams(max_new_tokens=48, temperature=1.0),
    )
    t0 = time.perf_counter()
    tokens = 0
    try:
        async for result in runner.run(tasks):
            tokens += result.budget.generated_tokens
    finally:
        await executor.close()
    return tokens / (time.perf_counter() - t0)


async def measure(
    size: Size, policies: dict[str, Any], template: ReActTemplate, model: Any, tasks: list
) -> dict[str, dict[str, list[float]]]:
    """``rates[workload][arm]``: tok/s per repetition; arm order rotates between repetitions."""
    vocab = len(template.tokenizer)
    rates: dict[str, dict[str, list[float]]] = {"distinct": {}, "shared": {}, "collect": {}}
    arms = [a for a in ARMS if a in policies or a == "bare batched forward"]
    warm = synthetic(size, False, -1, vocab)[:2]
    for arm in policies:  # untimed: first-call costs (thread start, allocations, compilation)
        await timed(policies[arm], warm)
    bare_forward(model, warm)
    for rep in range(size.repeats):
        order = arms[rep % len(arms) :] + arms[: rep % len(arms)]
        for arm in order:
            for workload in ("distinct", "shared"):
                reqs = synthetic(size, workload == "shared", rep, vocab)
                if arm == "bare batched forward":
                    if workload == "distinct":
                        rates[workload].setdefault(arm, []).append(bare_forward(model, reqs))
                    continue
                await flush(arm, policies[arm])
                rates[workload].setdefault(arm, []).append(await timed(policies[arm], reqs))
            if arm in policies:
                await flush(arm, policies[arm])
                rate = await collect_rate(policies[arm], template, tasks, size.max_episode_steps)
                rates["collect"].setdefault(arm, []).append(rate)
            print(
                f"[engine_speed] rep {rep} {arm}: "
                + ", ".join(f"{w} {r[arm][-1]:.0f}" for w, r in rates.items() if arm in r),
                flush=True,
            )
    return rates


def sections(size_name: str) -> list[Section]:
    size = SIZES[size_name]
    model_path = embedded_model_path()
    policy = HFPolicy(model_path)
    template = ReActTemplate.for_model(policy.tokenizer, model_path)
    policies: dict[str, Any] = {
        "HFPolicy": policy,
        "HFPolicy before": before_policy_class()(model_path),
    }
    tasks = heldout_tasks("textworld", size.collect_tasks)
    server, url = vllm_server(model_path)
    notes = []
    if server is None:
        notes.append(f"vLLM arm not measured: {url}")
        rates = asyncio.run(measure(size, policies, template, policy.model, tasks))
    else:
        from treegym.policies.vllm import VLLMPolicy

        with server:
            policies["vLLM"] = VLLMPolicy(url)
            rates = asyncio.run(measure(size, policies, template, policy.model, tasks))
    return [synthetic_section(size, rates, notes), collect_section(size, rates)]


def _cell(rates: dict[str, list[float]], arm: str, base: str | None = None) -> str:
    if arm not in rates:
        return "—"
    if base is None:
        return Spread(rates[arm]).fmt(0)
    return ratios(rates[arm], rates[base]).fmt(2, "×") if base in rates else "—"


def synthetic_section(size: Size, rates: dict, notes: list[str]) -> Section:
    d, s = rates["distinct"], rates["shared"]
    rows = [
        [
            arm,
            _cell(d, arm),
            _cell(s, arm),
            _cell(d, "HFPolicy", arm) if arm != "HFPolicy" else "1",
            _cell(s, "HFPolicy", arm) if arm != "HFPolicy" else "1",
        ]
        for arm in ARMS
        if arm in d or arm in s
    ]
    vs_vllm = ratios(d["HFPolicy"], d["vLLM"]) if "vLLM" in d else None
    headline = (
        f"HFPolicy's engine generates {ratios(d['HFPolicy'], d['HFPolicy before']).fmt(1, '×')} "
        "the tokens per second of the HFPolicy it replaced on distinct prompts"
        + (f" and {vs_vllm.fmt(2, '×')} vLLM 0.32 CPU's" if vs_vllm else "")
    )
    return Section(
        slug=SLUG,
        title="Engine throughput: synthetic prompts",
        intro=(
            f"{size.prompts} prompts of {size.prompt_len} random tokens, {size.new} new "
            "tokens each at T=1 (EOS ignored), all sent at once; the embedded model in "
            f"float32; generated tokens per second; {size.repeats} repetitions, arm order "
            "rotated, caches flushed before every arm."
        ),
        header=[
            "arm",
            "distinct prompts tok/s",
            "one shared prompt tok/s",
            "HFPolicy ÷ arm (distinct)",
            "HFPolicy ÷ arm (shared)",
        ],
        rows=rows,
        notes=[
            *notes,
            "vLLM runs as its own server (HTTP, one request per prompt, sent "
            "concurrently); the bare forward has no scheduler and no prefix reuse.",
        ],
        chart=Chart(
            "generated tokens / s",
            ["distinct", "shared"],
            {arm: [Spread(d.get(arm, [])), Spread(s.get(arm, []))] for arm in ARMS if arm in d},
            log=True,
        ),
        headline=headline + ".",
    )


def collect_section(size: Size, rates: dict) -> Section:
    c = rates["collect"]
    rows = [
        [arm, _cell(c, arm), "1" if arm == "HFPolicy" else _cell(c, "HFPolicy", arm)]
        for arm in ARMS
        if arm in c
    ]
    gain = ratios(c["HFPolicy"], c["HFPolicy before"]).fmt(1, "×")
    return Section(
        slug=SLUG + "_collect",
        title="Engine throughput: a real Tree-GRPO collection",
        intro=(
            f"Tree-GRPO (M2 N2 L1 K3) on {size.collect_tasks} held-out embedded-mix TextWorld "
            f"tasks (≤ {size.max_episode_steps} steps), the embedded model at T=1, 2 env "
            "worker processes, 4 tasks in flight; generated tokens per second of the "
            "collection's wall time (env steps included)."
        ),
        header=["arm", "generated tok/s", "HFPolicy ÷ arm"],
        rows=rows,
        chart=Chart(
            "generated tokens / s", ["collect"], {arm: [Spread(c[arm])] for arm in ARMS if arm in c}
        ),
        headline=f"On a real collection HFPolicy's engine is {gain} faster than before.",
    )


if __name__ == "__main__":
    size_cli(__doc__, SIZES, sections)
