"""Engine-level prefix caching: the sampler comparison against an engine with its prefix cache
on, and against the same engine with it off (the control arm), side by side in one run.

What is compared: ``chain`` (G=6) and ``tree_grpo`` (published M=2 N=2 L=1 K=3) on held-out
TextWorld tasks of the embedded model's mix, through ``SGLangPolicy`` — the HTTP client of
SGLang's native ``/generate`` — against two servers of the same model: one with its prefix
cache, one without. Each arm starts cold (``POST /flush_cache`` before it), the arm order
alternates over the repetitions, and the sampling seeds are the same in both arms. Reported per
sampler and arm: prompt tokens, the prompt tokens the engine served from its cache
(``meta_info.cached_tokens``), the prompt tokens it computed, generated tokens, engine-busy
seconds (time with at least one ``/generate`` in flight) and wall seconds; per sampler the
ratios off/on of computed prompt tokens and of wall seconds, and the seconds saved. It also
checks that the two arms sampled the same trajectories (same ids) for the same seeds.

Three ways to run it:

* ``sections(size)`` (the suite, ``bench/run_all.py``; size ``smoke`` or ``full``), or
  ``python bench/engine_prefix_cache.py [--size full]``: starts two ``treegym serve --engine
  hf`` servers of the embedded model on free 127.0.0.1 ports, one with ``--cache-mb 0`` (its
  prefix KV cache disabled), and measures on this machine's CPU.
* ``python bench/engine_prefix_cache.py --sglang-model PATH`` (PATH may be ``embedded``; needs a
  GPU and ``pip install sglang``): starts ``treegym serve --engine sglang --model PATH`` twice,
  once with ``--disable-radix-cache``, each with ``--mem-fraction-static 0.35`` so both fit on
  one GPU (``--sglang-args "..."`` replaces that; add ``--enable-deterministic-inference`` to
  make the two arms sample token-identical trajectories), and runs the same comparison.
* ``python bench/engine_prefix_cache.py --urls-on URL --urls-off URL``: servers you started
  yourself (e.g. ``python -m sglang.launch_server --model-path PATH --port 30000`` and the
  same with ``--disable-radix-cache --port 30001``); comma-separated lists are engines behind
  client-side sticky routing. ``--tokenizer`` is the tokenizer of the served model (default:
  the embedded one); it must know the ReAct template's special tokens. Each server's
  ``/get_server_info`` must report ``disable_radix_cache`` as its arm expects when it reports
  it at all.

Every mode prints the same markdown table. Servers this script starts are stopped whatever
happens (SIGTERM to their process group, SIGKILL after a grace period).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_common import BusyTimer, Chart, Section, Spread, heldout_tasks, machine, ratios

from treegym.harness import (
    Budget,
    ChainSampler,
    EnvExecutor,
    InProcessExecutor,
    ProcessExecutor,
    Runner,
    Sampler,
    Task,
    TreeGRPOSampler,
)
from treegym.policies import PolicyError, ReActTemplate, SamplingParams
from treegym.policies.embedded import embedded_model_path
from treegym.policies.launcher import wait_healthy
from treegym.policies.protocol import GenerateRequest
from treegym.policies.react import END
from treegym.policies.sglang import SGLangPolicy

SLUG = "engine_prefix_cache"
TITLE = "Engine-level prefix caching: cache on vs off (the control arm)"
REPEATS = 3
SAMPLERS: dict[str, Any] = {
    "chain G=6": lambda: ChainSampler(6),
    "tree_grpo M2 N2 L1 K3": TreeGRPOSampler.published,
}
ARMS = ("on", "off")
CACHE_MB = 256  # treegym serve's default --cache-mb: the cache-on arm runs as users get it


@dataclass(frozen=True)
class Size:
    tasks: int
    max_episode_steps: int
    max_new_tokens: int
    workers: int  # env worker processes; 0: in this process


SIZES = {
    "smoke": Size(tasks=1, max_episode_steps=3, max_new_tokens=32, workers=0),
    "full": Size(tasks=4, max_episode_steps=20, max_new_tokens=48, workers=2),
}

MEASURED_HERE = (
    "**Measured where.** Every number in this table was measured on this machine's CPU (no GPU) "
    "against two `treegym serve --engine hf` servers of the embedded model (transformers with "
    "treegym's prefix KV cache; the control arm runs with `--cache-mb 0`). No SGLang number is "
    "in it: SGLang needs a GPU, which this project does not have."
)
RECIPE = (
    "**The same comparison on SGLang** (GPU, `pip install sglang`): "
    "`python bench/engine_prefix_cache.py --sglang-model PATH` (PATH may be `embedded`) starts "
    "`treegym serve --engine sglang --model PATH` twice, once with SGLang's "
    "`--disable-radix-cache`, both with `--mem-fraction-static 0.35` so they share one GPU "
    '(`--sglang-args "..."` replaces that), and prints this table for RadixAttention; or start '
    "the two servers yourself (`python -m sglang.launch_server --model-path PATH --port 30000` "
    "and the same with `--disable-radix-cache --port 30001`) and run "
    "`python bench/engine_prefix_cache.py --urls-on http://127.0.0.1:30000 --urls-off "
    "http://127.0.0.1:30001 --tokenizer PATH`. The URL mode is the one tested here (against two "
    "treegym hf servers); the launch mode only adds the two `treegym serve --engine sglang` "
    "processes. Add `--enable-deterministic-inference` to SGLang's arguments if the two arms "
    "should sample the same trajectories token for token; the table's notes say whether they did."
)


# ---------------------------------------------------------------------- servers
def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held open together while picked)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def treegym_serve(*args: str) -> list[str]:
    """The ``treegym serve`` command line, run by this interpreter (no PATH lookup)."""
    return [sys.executable, "-c", "from treegym.cli import app; app()", "serve", *args]


def hf_server(port: int, cache_on: bool, model: str = "embedded") -> list[str]:
    cache_mb = str(CACHE_MB) if cache_on else "0"
    return treegym_serve("--engine", "hf", "--model", model, "--host", "127.0.0.1",
                         "--port", str(port), "--cache-mb", cache_mb)  # fmt: skip


def sglang_server(port: int, cache_on: bool, model: str, extra: Sequence[str]) -> list[str]:
    off = [] if cache_on else ["--disable-radix-cache"]
    return treegym_serve("--engine", "sglang", "--model", model, "--host", "127.0.0.1",
                         "--port", str(port), *extra, *off)  # fmt: skip


def _stop_group(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM the server's whole process group (``treegym serve --engine sglang`` has SGLang's
    processes under it), then SIGKILL what is left after ``grace_s``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _die_with_parent() -> None:
    """In the server's process, before exec: SIGTERM it when this process dies (Linux), so a
    SIGKILLed bench leaves no server behind."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _raise_exit(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def served(commands: Sequence[Sequence[str]], urls: Sequence[str],
           timeout_s: float) -> Iterator[None]:  # fmt: skip
    """Run each command (a server at its URL) for the ``with`` block; all are stopped after,
    whatever happens (an exception, Ctrl-C, a SIGTERM to this process — turned into SystemExit
    while the servers run — or this process being killed). A server that dies or never answers
    ``/health`` fails with its log's tail."""
    procs: list[subprocess.Popen] = []
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_exit) if main_thread else None
    try:
        with tempfile.TemporaryDirectory(prefix="treegym-bench-") as tmp:
            logs = [Path(tmp) / f"server{i}.log" for i in range(len(commands))]
            try:
                for command, log in zip(commands, logs, strict=True):
                    with open(log, "wb") as fh:
                        procs.append(subprocess.Popen(
                            list(command), stdout=fh, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=_die_with_parent,
                        ))  # fmt: skip
                for url, proc, log in zip(urls, procs, logs, strict=True):
                    try:
                        wait_healthy(url, timeout_s, proc)
                    except PolicyError as exc:
                        tail = log.read_text(errors="replace")[-2000:]
                        raise PolicyError(f"{exc}\n--- server log tail ---\n{tail}") from None
                yield
            finally:
                for proc in procs:
                    _stop_group(proc)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _http(url: str, method: str = "GET", timeout: float = 30.0) -> bytes:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read()


def flush_cache(urls: Sequence[str], attempts: int = 20) -> None:
    """``POST /flush_cache`` on every URL (SGLang answers 400 while requests run: retry)."""
    for url in urls:
        for attempt in range(attempts):
            try:
                _http(url + "/flush_cache", "POST")
                break
            except urllib.error.HTTPError as exc:
                if exc.code != 400 or attempt == attempts - 1:
                    raise PolicyError(f"{url}/flush_cache failed: HTTP {exc.code}") from None
                time.sleep(0.5)


def server_info(url: str) -> dict[str, Any]:
    """``/get_server_info`` (``{}`` when the server has none)."""
    try:
        info = json.loads(_http(url + "/get_server_info"))
    except (urllib.error.URLError, OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def check_arms(urls_on: Sequence[str], urls_off: Sequence[str]) -> list[str]:
    """Refuse servers whose ``/get_server_info`` contradicts their arm; describe each server."""
    seen = []
    for arm, urls in (("on", urls_on), ("off", urls_off)):
        for url in urls:
            info = server_info(url)
            disabled = info.get("disable_radix_cache")
            if disabled is not None and bool(disabled) != (arm == "off"):
                raise PolicyError(
                    f"{url} reports disable_radix_cache={disabled} but is given as the cache-"
                    f"{arm} arm"
                )
            version = info.get("version", "unknown version")
            state = "unknown" if disabled is None else ("off" if disabled else "on")
            seen.append(f"{url} ({version}, prefix cache {state})")
    return seen


def split_urls(urls: str) -> list[str]:
    out = [u.strip().rstrip("/") for u in urls.split(",") if u.strip()]
    if not out:
        raise ValueError(f"no URL in {urls!r}")
    return out


# ---------------------------------------------------------------------- the measurement
@dataclass
class ArmRun:
    budget: Budget
    busy_s: float
    wall_s: float
    leaves: dict[tuple[str, int, tuple[int, ...]], tuple[float, ...]] = field(default_factory=dict)
    """(task, tree, leaf's full id sequence) -> logprobs along its path."""
    cache_bytes: int | None = None
    """Prefix-cache bytes the server reports after the arm (treegym's server; SGLang: None)."""


async def run_arm(urls: Sequence[str], sampler: Sampler, tasks: list[Task],
                  template: ReActTemplate, executor: EnvExecutor,
                  sampling: SamplingParams) -> ArmRun:  # fmt: skip
    await asyncio.to_thread(flush_cache, urls)
    policy = BusyTimer(SGLangPolicy(list(urls)))
    runner = Runner(policy=policy, template=template, executor=executor, sampler=sampler,
                    sampling=sampling, concurrency=4, fail_fast=True)  # fmt: skip
    total = Budget()
    run = ArmRun(total, 0.0, 0.0)
    t0 = time.perf_counter()
    try:
        async for result in runner.run(tasks):
            if result.error:
                raise RuntimeError(f"task {result.task.task_id} failed: {result.error}")
            result.budget.wall_s = 0.0  # per-task walls overlap; the arm's wall is taken below
            total += result.budget
            for tree in result.trees:
                for leaf in tree.leaves():
                    key = (result.task.task_id, tree.index, tuple(tree.input_ids(leaf)))
                    run.leaves[key] = tuple(lp for n in tree.path(leaf) for lp in n.logprobs)
    finally:
        await policy.aclose()
    run.wall_s = time.perf_counter() - t0
    run.busy_s = policy.busy_s
    held = [server_info(u).get("prefix_cache_bytes") for u in urls]
    if all(isinstance(b, int) for b in held):
        run.cache_bytes = sum(held)
    return run


async def measure_async(urls_on: Sequence[str], urls_off: Sequence[str], template: ReActTemplate,
                        size: Size, repeats: int,
                        log: Any = None) -> dict[str, dict[str, list[ArmRun]]]:  # fmt: skip
    """``runs[sampler][arm]``: one :class:`ArmRun` per repetition."""
    tasks = heldout_tasks("textworld", size.tasks)
    env_kwargs = {"max_episode_steps": size.max_episode_steps}
    executor: EnvExecutor = (
        ProcessExecutor("treegym/TextWorld-v0", env_kwargs, n_workers=size.workers)
        if size.workers
        else InProcessExecutor("treegym/TextWorld-v0", env_kwargs)
    )
    sampling = SamplingParams(max_new_tokens=size.max_new_tokens, temperature=1.0)
    urls = {"on": list(urls_on), "off": list(urls_off)}
    # Warm every server (first forward passes, allocator) so no arm pays for it.
    warm = GenerateRequest(tuple(template.prompt_ids("You are in a kitchen.", ["look"])),
                           SamplingParams(max_new_tokens=8, temperature=1.0, seed=0))  # fmt: skip
    for url in [*urls_on, *urls_off]:
        client = SGLangPolicy(url)
        try:
            await client.generate([warm, warm])
        finally:
            await client.aclose()
    runs: dict[str, dict[str, list[ArmRun]]] = {s: {a: [] for a in ARMS} for s in SAMPLERS}
    try:
        for rep in range(repeats):
            arms = ARMS if rep % 2 == 0 else ARMS[::-1]
            samplers = list(SAMPLERS) if rep % 2 == 0 else list(SAMPLERS)[::-1]
            for arm in arms:
                for name in samplers:
                    run = await run_arm(urls[arm], SAMPLERS[name](), tasks, template, executor,
                                        sampling)  # fmt: skip
                    runs[name][arm].append(run)
                    if log:
                        log(f"rep {rep + 1}/{repeats} cache {arm:<3} {name:<22} "
                            f"wall {run.wall_s:6.1f} s  busy {run.busy_s:6.1f} s  computed "
                            f"{run.budget.computed_prompt_tokens:,}")  # fmt: skip
    finally:
        await executor.close()
    return runs


def load_template(tokenizer: str | Path | None) -> ReActTemplate:
    from transformers import AutoTokenizer

    path = Path(tokenizer).expanduser() if tokenizer else embedded_model_path()
    tok = AutoTokenizer.from_pretrained(str(path))
    template = ReActTemplate.for_model(tok, path)  # the model's template.json, if it has one
    if template.end_id == tok.unk_token_id or template.end_id is None:
        raise ValueError(f"the tokenizer at {path} does not know the ReAct token {END}")
    return template


# ---------------------------------------------------------------------- the table
def _identity_note(runs: dict[str, dict[str, list[ArmRun]]]) -> str:
    same, pairs, lp_diff, leaves = 0, 0, 0.0, 0
    for by_arm in runs.values():
        for on, off in zip(by_arm["on"], by_arm["off"], strict=True):
            pairs += 1
            if on.leaves.keys() == off.leaves.keys():
                same += 1
                leaves += len(on.leaves)
                for key, lps in on.leaves.items():
                    other = off.leaves[key]
                    lp_diff = max([lp_diff] + [abs(a - b) for a, b in zip(lps, other, strict=True)])
    if same == pairs:
        return (
            f"Same seeds, same trajectories: in all {pairs} (sampler, repetition) pairs the "
            f"cache-on and cache-off arms sampled token-identical trajectories ({leaves} distinct "
            f"ones in all; logprobs within {lp_diff:.1e}), so the arms differ only in compute."
        )
    return (
        f"The arms sampled different trajectories in {pairs - same} of {pairs} (sampler, "
        "repetition) pairs although the sampling seeds were the same (the engine's numerics or "
        "sampling differ with the cache on and off), so the token counts of the arms differ "
        "beyond the cache itself; read the ratios with that in mind."
    )


def _cached_note(runs: dict[str, dict[str, list[ArmRun]]]) -> str:
    off = sum(r.budget.cached_tokens for by_arm in runs.values() for r in by_arm["off"])
    text = "cached tokens are `meta_info.cached_tokens`: prompt tokens the engine did not compute. "
    if not off:
        return text + "With the cache off they are 0: the engine computed every prompt token."
    return text + (
        "With the cache off they are not all 0: requests with the same prompt sent in one batch "
        "(children of a node) have that prompt computed once, which SGLang reports the same way; "
        "the cache adds the reuse across turns and across nodes."
    )


def _capacity_note(runs: dict[str, dict[str, list[ArmRun]]], budget_mb: int | None) -> list[str]:
    """How full the cache-on server's prefix cache got, when it says (treegym's server does)."""
    held = [r.cache_bytes for by_arm in runs.values() for r in by_arm["on"]]
    if not held or any(b is None for b in held):
        return []
    spread = Spread([b / 2**20 for b in held])
    text = f"The cache-on server's prefix cache held {spread.fmt(0)} MB at the end of an arm"
    if budget_mb is None:
        return [text + "."]
    text += f" (budget `--cache-mb {budget_mb}`, treegym serve's default)"
    if spread.hi >= 0.9 * budget_mb:
        varies = [
            name
            for name, by_arm in runs.items()
            if len({r.budget.computed_prompt_tokens for r in by_arm["on"]}) > 1
            and len({frozenset(r.leaves) for r in by_arm["on"]}) == 1
        ]
        text += (
            ": it filled up and evicted least-recently-used prefixes (it keeps a full KV copy "
            "per cached prefix), so the cache-on arm recomputed evicted ones"
        )
        if varies:
            text += (
                f"; that is why the cache-on computed tokens of {' and '.join(varies)} vary "
                "between repetitions although the trajectories do not (what is evicted depends "
                "on the order in which concurrent tasks' requests arrive)"
            )
    elif spread.hi < 0.5 * budget_mb:
        text += ": well under its budget, so nothing was evicted"
    return [text + "."]


def _per_token_note(runs: dict[str, dict[str, list[ArmRun]]]) -> str:
    """Engine seconds saved per prompt token not computed, against the cost of decoding."""
    saved_us, decode_ms = [], []
    for by_arm in runs.values():
        for on, off in zip(by_arm["on"], by_arm["off"], strict=True):
            tokens = off.budget.computed_prompt_tokens - on.budget.computed_prompt_tokens
            if tokens > 0:
                saved_us.append(1e6 * (off.busy_s - on.busy_s) / tokens)
            if on.budget.generated_tokens:
                decode_ms.append(1e3 * on.busy_s / on.budget.generated_tokens)
    if not saved_us or not decode_ms:
        return "No prompt tokens were saved by the cache in this run."
    return (
        f"Each prompt token the cache spared saved {Spread(saved_us).fmt(0, ' µs')} of engine "
        f"time, while the cache-on arms spent {Spread(decode_ms).fmt(1, ' ms')} of engine time "
        "per generated token (a prompt is prefilled in one batched forward pass, a generation "
        "decodes one forward pass per token): their ratio sets how much of the token saving "
        "becomes time saved, and it depends on the engine, the model and the hardware."
    )


@dataclass(frozen=True)
class Labels:
    """What the table says about where it was measured."""

    engine: str
    """The engine, in the intro (markdown)."""
    short: str
    """The engine, in the headline."""
    where: str
    """The intro's last sentence: where the numbers were measured."""
    machine: str = "Machine"
    """How the machine note names this machine (the servers may run elsewhere)."""
    notes: tuple[str, ...] = ()
    cache_budget_mb: int | None = None
    """The cache-on server's prefix-cache budget, when known."""


HF_LABELS = Labels(
    engine="`treegym serve --engine hf` (the embedded model, transformers on the CPU; control "
    "arm `--cache-mb 0`)",
    short="`treegym serve --engine hf` on the CPU",
    where="Measured on this machine's CPU; no SGLang figure is in this table (see the recipe "
    "below).",
    machine="Machine (client and servers)",
    notes=(MEASURED_HERE, RECIPE),
    cache_budget_mb=CACHE_MB,
)


def build_section(runs: dict[str, dict[str, list[ArmRun]]], size: Size, repeats: int,
                  labels: Labels, servers: list[str]) -> Section:  # fmt: skip
    def spread(name: str, arm: str, fn: Any) -> Spread:
        return Spread([float(fn(r)) for r in runs[name][arm]])

    header = ["sampler", "prefix cache", "prompt tokens", "cached tokens",
              "computed prompt tokens", "generated tokens", "engine-busy s", "wall s",
              "computed off / on", "wall off / on", "seconds saved"]  # fmt: skip
    rows, comp_r, wall_r, saved = [], {}, {}, {}
    for name in SAMPLERS:
        on, off = runs[name]["on"], runs[name]["off"]
        comp_r[name] = ratios([r.budget.computed_prompt_tokens for r in off],
                              [r.budget.computed_prompt_tokens for r in on])  # fmt: skip
        wall_r[name] = ratios([r.wall_s for r in off], [r.wall_s for r in on])
        saved[name] = Spread([b.wall_s - a.wall_s for a, b in zip(on, off, strict=True)])
        for arm in ARMS:
            label = "on" if arm == "on" else "off (control)"
            tail = (
                [f"**{comp_r[name].fmt(2, '×')}**", f"**{wall_r[name].fmt(2, '×')}**",
                 saved[name].fmt(1, " s")]
                if arm == "on" else ["", "", ""]
            )  # fmt: skip
            rows.append([
                name, label,
                spread(name, arm, lambda r: r.budget.prompt_tokens).fmt(0),
                spread(name, arm, lambda r: r.budget.cached_tokens).fmt(0),
                spread(name, arm, lambda r: r.budget.computed_prompt_tokens).fmt(0),
                spread(name, arm, lambda r: r.budget.generated_tokens).fmt(0),
                spread(name, arm, lambda r: r.busy_s).fmt(1),
                spread(name, arm, lambda r: r.wall_s).fmt(1),
                *tail,
            ])  # fmt: skip
    chain, tree = list(SAMPLERS)
    m = machine()
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            m["gpu"] = torch.cuda.get_device_name(0)
    intro = (
        f"The sampler comparison through {labels.engine}, with the engine's prefix cache on "
        f"and off (off is the control arm), side by side in one run: {size.tasks} held-out "
        f"TextWorld task{'s' if size.tasks > 1 else ''} of the embedded model's mix, at "
        f"most {size.max_episode_steps} steps, "
        f"{size.max_new_tokens} new tokens per turn, temperature 1, 6 training trajectories per "
        f"task in both samplers, through `SGLangPolicy` (SGLang's `/generate` protocol). "
        f"{repeats} repetitions, arm order alternating, each arm cold (`/flush_cache` before "
        f"it); median (min–max). {labels.where}"
    )
    notes = [
        _identity_note(runs),
        _cached_note(runs),
        _per_token_note(runs),
        *_capacity_note(runs, labels.cache_budget_mb),
        "engine-busy s: time with at least one `/generate` request in flight (client side); "
        "seconds saved: wall(off) − wall(on) per repetition.",
        f"Servers: {'; '.join(servers)}.",
        f"{labels.machine}: {m['cpu']}, {m['cores']} cores, {m['memory']}, "
        f"torch {m['torch']}, GPU: {m['gpu']}.",
        *labels.notes,
    ]
    chart = Chart(
        ylabel="cache off / cache on (×)",
        groups=[chain, tree],
        series={
            "computed prompt tokens": [comp_r[chain], comp_r[tree]],
            "wall seconds": [wall_r[chain], wall_r[tree]],
        },
        reference=1.0,
    )
    headline = (
        f"Engine prefix cache ({labels.short}): with it on, tree_grpo computes "
        f"{comp_r[tree].median:.1f}× fewer prompt tokens and finishes {wall_r[tree].median:.2f}× "
        f"sooner than with it off (chain G=6: {comp_r[chain].median:.1f}× and "
        f"{wall_r[chain].median:.2f}×)."
    )
    return Section(SLUG, TITLE, intro, header, rows, notes, chart, headline)


# ---------------------------------------------------------------------- entry points
def run_comparison(urls_on: Sequence[str], urls_off: Sequence[str], size: Size, labels: Labels,
                   *, repeats: int = REPEATS, tokenizer: str | Path | None = None,
                   log: Any = None) -> Section:  # fmt: skip
    """The comparison against servers that are already up (the URL mode)."""
    servers = check_arms(urls_on, urls_off)
    template = load_template(tokenizer)
    runs = asyncio.run(measure_async(urls_on, urls_off, template, size, repeats, log))
    return build_section(runs, size, repeats, labels, servers)


def run_launched(commands: dict[str, list[str]], urls: dict[str, str], size: Size,
                 labels: Labels, *, timeout_s: float, **kwargs: Any) -> Section:  # fmt: skip
    """Start the two servers (``commands[arm]`` serving at ``urls[arm]``), run the comparison,
    stop them."""
    with served([commands["on"], commands["off"]], [urls["on"], urls["off"]], timeout_s):
        return run_comparison([urls["on"]], [urls["off"]], size, labels, **kwargs)


def launch_args(make: Any) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Commands and URLs of the two arms on free ports; ``make(port, cache_on)``."""
    ports = dict(zip(ARMS, free_ports(2), strict=True))
    commands = {a: make(p, a == "on") for a, p in ports.items()}
    return commands, {a: f"http://127.0.0.1:{p}" for a, p in ports.items()}


def hf_section(size: Size, repeats: int = REPEATS, log: Any = None) -> Section:
    """Two ``treegym serve --engine hf`` servers of the embedded model, measured here."""
    commands, urls = launch_args(hf_server)
    return run_launched(commands, urls, size, HF_LABELS, timeout_s=180, repeats=repeats, log=log)


def sections(size: str) -> list[Section]:
    """The suite's entry point: ``size`` is ``smoke`` or ``full``."""
    return [hf_section(SIZES[size])]


def dispatch(args: argparse.Namespace, size: Size, log: Any) -> Section:
    """The mode the command line asked for: URLs, launched SGLang, or the hf servers."""
    if args.urls_on:
        on, off = split_urls(args.urls_on), split_urls(args.urls_off)
        labels = Labels(
            engine=f"the servers at {', '.join(on)} (cache on) and {', '.join(off)} (cache off)",
            short="the given servers",
            where="Measured against servers started by the user; the machine note describes "
            "the client only.",
            machine="Client machine",
        )
        return run_comparison(
            on, off, size, labels, repeats=args.repeats, tokenizer=args.tokenizer, log=log
        )
    if args.sglang_model:
        model = args.sglang_model
        tokenizer = args.tokenizer or (None if model == "embedded" else model)
        extra = shlex.split(args.sglang_args)
        commands, urls = launch_args(lambda p, on: sglang_server(p, on, model, extra))
        labels = Labels(
            engine=f"SGLang (`treegym serve --engine sglang --model {model}`; control arm "
            "`--disable-radix-cache`)",
            short="SGLang",
            where=f"Measured on SGLang (server arguments: {args.sglang_args or 'none'}).",
        )
        return run_launched(commands, urls, size, labels, timeout_s=900, repeats=args.repeats,
                            tokenizer=tokenizer, log=log)  # fmt: skip
    return hf_section(size, args.repeats, log)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", choices=sorted(SIZES), default="full")
    ap.add_argument("--tasks", type=int, help="override the size's task count")
    ap.add_argument("--repeats", type=int, default=REPEATS)
    ap.add_argument("--sglang-model", help="launch two SGLang servers of this model (or "
                    "'embedded') through `treegym serve --engine sglang`")  # fmt: skip
    ap.add_argument(
        "--sglang-args",
        default="--mem-fraction-static 0.35",
        help="extra SGLang arguments for both servers (default: %(default)s)",
    )
    ap.add_argument("--urls-on", help="server(s) with the prefix cache on (comma-separated)")
    ap.add_argument("--urls-off", help="server(s) with it off, e.g. --disable-radix-cache")
    ap.add_argument("--tokenizer", help="tokenizer folder of the served model (default: the "
                    "embedded one; with --sglang-model, the model's folder)")  # fmt: skip
    ap.add_argument("--png", help="also write the chart to this PNG")
    args = ap.parse_args()
    size = SIZES[args.size]
    if args.tasks:
        size = Size(args.tasks, size.max_episode_steps, size.max_new_tokens, size.workers)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if bool(args.urls_on) != bool(args.urls_off):
        ap.error("give both --urls-on and --urls-off")
    if args.urls_on and args.sglang_model:
        ap.error("--urls-on/--urls-off and --sglang-model exclude each other")
    try:
        section = dispatch(args, size, log)
    except (PolicyError, ValueError, OSError) as exc:
        sys.exit(f"error: {exc}")
    print(section.markdown(None))
    print(section.headline)
    if args.png:
        from bench_common import plot_chart

        plot_chart(section.chart, section.title, Path(args.png))


if __name__ == "__main__":
    main()
