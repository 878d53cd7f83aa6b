"""Many engines: how requests spread over two engines behind the real ``sglang-router`` (by
policy) and behind ``SGLangPolicy``'s own client-side routing, against one engine alone.

Engines: two ``treegym serve --engine hf --model embedded`` processes (one torch/OMP thread
each, so the two really run side by side on two cores). Workload: ``tasks`` tree-shaped tasks
sent concurrently; each task's root prompt (a ReAct prompt of its own room) gets ``children``
samples in one ``generate`` call, and each child's next turn (root + its output + the next
observation) gets ``children`` samples again, all branches at once. Arms:

* ``1 engine``: ``SGLangPolicy(url0)`` (a batch per node).
* ``router ...``: ``python -m sglang_router.launch_router --worker-urls url0 url1`` with the
  arm's arguments (a fresh router per arm and repetition): ``cache_aware`` with its defaults,
  ``cache_aware`` with balance thresholds 0 and 1.0 (shortest queue whenever loads differ),
  ``round_robin``, and ``manual --assignment-mode min_group`` (pinned by the
  ``X-SMG-Routing-Key`` the client sends per tree). The router takes single requests only (a
  batch is a 422), so a node's children go as concurrent singles.
* ``client url0,url1``: ``SGLangPolicy("url0,url1")``, a tree follows its root's engine.

Reported per arm (median, min–max over the repetitions; each arm starts cold: ``/flush_cache``
on both engines): requests each engine served (its ``/server_info`` ``served_requests``),
trunk hits (second-turn requests whose ``cached_tokens`` cover their parent's whole sequence:
the branch ran where its trunk is), cached share of prompt tokens, generated tokens/s, wall s,
and tokens/s over the 1-engine arm of the same repetition.

    python bench/router.py [--size smoke|full] [--repeats N]

Prints a markdown table; writes the raw runs to ``bench/results/router-<size>.json``
(``$TREEGYM_BENCH_RESULTS`` moves the folder).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench_common import Chart, Section, Spread, machine, ratios
from engine_prefix_cache import flush_cache, free_ports, load_template, served, server_info

from treegym.policies import ReActTemplate, SamplingParams
from treegym.policies.protocol import GenerateRequest, GenerateResult
from treegym.policies.sglang import SGLangPolicy

HERE = Path(__file__).resolve().parent
RESULTS = Path(os.environ.get("TREEGYM_BENCH_RESULTS") or HERE / "results")
SLUG = "router"
TITLE = "Many engines: sglang-router policies and client-side routing over two engines"
REPEATS = 3
ONE_THREAD = ("env", "OMP_NUM_THREADS=1", "MKL_NUM_THREADS=1")


@dataclass(frozen=True)
class Size:
    tasks: int
    children: int
    max_new_tokens: int


SIZES = {
    "smoke": Size(tasks=8, children=2, max_new_tokens=16),
    "full": Size(tasks=32, children=3, max_new_tokens=64),
}


@dataclass(frozen=True)
class Arm:
    name: str
    engines: int
    router: tuple[str, ...] | None = None
    """``sglang_router.launch_router`` arguments; None: the client talks to the engines."""


ARMS = (
    Arm("1 engine", 1),
    Arm("router cache_aware (defaults)", 2, ("--policy", "cache_aware")),
    Arm("router cache_aware, balance 0 / 1.0", 2, (
        "--policy", "cache_aware", "--balance-abs-threshold", "0",
        "--balance-rel-threshold", "1.0")),
    Arm("router round_robin", 2, ("--policy", "round_robin")),
    Arm("router manual min_group", 2, ("--policy", "manual", "--assignment-mode", "min_group")),
    Arm("client url0,url1", 2),
)  # fmt: skip

ROOMS = ("Hall", "Kitchen", "Cellar", "Attic", "Garden", "Study", "Pantry", "Bathroom",
         "Bedroom", "Garage", "Library", "Shed", "Porch", "Office", "Nursery", "Laundry",
         "Gallery", "Chapel", "Vault", "Tower")  # fmt: skip
THINGS = ("a lamp", "a key", "a box", "an apple", "a knife", "a book", "a coin", "a rope")


@dataclass
class ArmRun:
    wall_s: float
    served: list[int]
    """Requests each engine served during the arm."""
    requests: int
    prompt_tokens: int
    cached_tokens: int
    generated_tokens: int
    second_turn: int
    trunk_hits: int
    """Second-turn requests whose cached tokens cover their parent's prompt and output."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tok_s(self) -> float:
        return self.generated_tokens / self.wall_s


def task_prompts(template: ReActTemplate, i: int) -> tuple[list[int], list[int]]:
    """Task ``i``'s root prompt and the observation its second turn appends."""
    room = ROOMS[i % len(ROOMS)] + ("" if i < len(ROOMS) else f" {i // len(ROOMS) + 1}")
    things = f"{THINGS[i % len(THINGS)]} and {THINGS[(3 * i + 1) % len(THINGS)]}"
    commands = ["look", "inventory", f"take {THINGS[i % len(THINGS)][2:].strip()}", "go north"]
    root = template.prompt_ids(f"-= {room} =-\nYou are in the {room}. You see {things}.", commands)
    obs = template.observation_ids(f"Nothing happens in the {room}.", commands)
    return root, obs


async def one_task(policy: SGLangPolicy, root: list[int], obs: list[int], size: Size,
                   seed: int, sink: list[tuple[int, GenerateResult, int]]) -> None:  # fmt: skip
    """Root -> ``children`` samples -> each child's next turn -> ``children`` samples again;
    ``sink`` gets ``(turn, result, trunk length)`` per request."""

    def reqs(ids: list[int], base: int) -> list[GenerateRequest]:
        return [GenerateRequest(tuple(ids), SamplingParams(
            max_new_tokens=size.max_new_tokens, temperature=1.0, seed=base + k))
            for k in range(size.children)]  # fmt: skip

    first = await policy.generate(reqs(root, seed))
    sink += [(1, r, 0) for r in first]

    async def branch(j: int, child: GenerateResult) -> None:
        trunk = [*root, *child.output_ids]
        out = await policy.generate(reqs([*trunk, *obs], seed + 100 * (j + 1)))
        sink.extend((2, r, len(trunk)) for r in out)

    await asyncio.gather(*(branch(j, c) for j, c in enumerate(first)))


async def run_arm(policy: SGLangPolicy, engines: list[str], template: ReActTemplate,
                  size: Size) -> ArmRun:  # fmt: skip
    before = [server_info(u).get("served_requests", 0) for u in engines]
    prompts = [task_prompts(template, i) for i in range(size.tasks)]
    sink: list[tuple[int, GenerateResult, int]] = []
    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(
            one_task(policy, root, obs, size, 1000 * i, sink)
            for i, (root, obs) in enumerate(prompts)
        ))  # fmt: skip
    finally:
        await policy.aclose()
    wall = time.perf_counter() - t0
    after = [server_info(u).get("served_requests", 0) for u in engines]
    second = [(r, trunk) for turn, r, trunk in sink if turn == 2]
    return ArmRun(
        wall_s=wall,
        served=[a - b for a, b in zip(after, before, strict=True)],
        requests=len(sink),
        prompt_tokens=sum(r.prompt_tokens for _, r, _ in sink),
        cached_tokens=sum(r.cached_tokens for _, r, _ in sink),
        generated_tokens=sum(len(r.output_ids) for _, r, _ in sink),
        second_turn=len(second),
        # the engine caches a finished request's prompt and output but its last token
        trunk_hits=sum(r.cached_tokens >= trunk - 1 for r, trunk in second),
    )


def router_command(args: tuple[str, ...], engines: list[str], port: int, metrics: int) -> list[str]:
    return [sys.executable, "-m", "sglang_router.launch_router", "--worker-urls", *engines,
            *args, "--host", "127.0.0.1", "--port", str(port), "--prometheus-host", "127.0.0.1",
            "--prometheus-port", str(metrics), "--log-level", "error"]  # fmt: skip


def measure(size: Size, repeats: int, log: Any = None) -> tuple[dict[str, list[ArmRun]], float]:
    """``runs[arm]``: one :class:`ArmRun` per repetition; and the engines' start-up seconds."""
    template = load_template(None)
    ports = free_ports(2)
    engines = [f"http://127.0.0.1:{p}" for p in ports]
    commands = [[*ONE_THREAD, sys.executable, "-c", "from treegym.cli import app; app()", "serve",
                 "--engine", "hf", "--model", "embedded", "--host", "127.0.0.1",
                 "--port", str(p)] for p in ports]  # fmt: skip
    runs: dict[str, list[ArmRun]] = {a.name: [] for a in ARMS}
    t0 = time.perf_counter()
    with served(commands, engines, timeout_s=180):
        startup = time.perf_counter() - t0
        warm = GenerateRequest(tuple(template.prompt_ids("You are in a kitchen.", ["look"])),
                               SamplingParams(max_new_tokens=4, seed=0))  # fmt: skip
        for url in engines:
            asyncio.run(_warm(url, warm))
        for rep in range(repeats):
            order = ARMS if rep % 2 == 0 else ARMS[::-1]
            for arm in order:
                flush_cache(engines)
                used = engines[: arm.engines]
                if arm.router is None:
                    run = asyncio.run(run_arm(SGLangPolicy(used), engines, template, size))
                else:
                    port, metrics = free_ports(2)
                    url = f"http://127.0.0.1:{port}"
                    with served([router_command(arm.router, used, port, metrics)], [url], 60):
                        run = asyncio.run(run_arm(SGLangPolicy(url), engines, template, size))
                runs[arm.name].append(run)
                if log:
                    log(f"rep {rep + 1}/{repeats} {arm.name:<36} served {run.served} trunk hits "
                        f"{run.trunk_hits}/{run.second_turn} wall {run.wall_s:5.1f} s "
                        f"{run.tok_s:6.1f} tok/s")  # fmt: skip
    return runs, startup


async def _warm(url: str, req: GenerateRequest) -> None:
    client = SGLangPolicy(url)
    try:
        await client.generate([req, req])
    finally:
        await client.aclose()


def build_section(runs: dict[str, list[ArmRun]], size: Size, repeats: int) -> Section:
    base = runs[ARMS[0].name]
    header = ["arm", "requests: busier / other engine", "trunk hits", "cached share",
              "tokens/s", "wall s", "tokens/s ÷ 1 engine"]  # fmt: skip
    rows = []
    for arm in ARMS:
        rs = runs[arm.name]
        busy = [sorted(r.served, reverse=True) for r in rs]
        per = " / ".join(Spread([float(b[i]) for b in busy]).fmt(0) for i in range(2))
        hits = Spread([100 * r.trunk_hits / r.second_turn for r in rs]).fmt(0, " %")
        share = Spread([100 * r.cached_tokens / r.prompt_tokens for r in rs]).fmt(0, " %")
        speed = ratios([r.tok_s for r in rs], [r.tok_s for r in base])
        rows.append([arm.name, per, hits, share, Spread([r.tok_s for r in rs]).fmt(1),
                     Spread([r.wall_s for r in rs]).fmt(1), speed.fmt(2, "×")])  # fmt: skip
    per_arm = size.tasks * (size.children + size.children**2)
    m = machine()
    intro = (
        f"{size.tasks} tree-shaped tasks sent at once (each: a root prompt, {size.children} "
        f"samples of it, then {size.children} samples of each child's next turn; "
        f"{per_arm} requests, at most {size.max_new_tokens} new tokens each, temperature 1) to "
        "two `treegym serve --engine hf` engines of the embedded model (one thread each), "
        "through the real `sglang-router` by policy and through `SGLangPolicy`'s client-side "
        f"routing, against one engine alone. {repeats} repetitions, arm order alternating, "
        "each arm cold; median (min–max)."
    )
    notes = [
        "requests: what each engine's `/server_info` counted (`served_requests`) during the "
        "arm, the busier engine first (which one it is varies). trunk hits: second-turn "
        "requests whose `cached_tokens` cover their parent's prompt and output, i.e. that ran "
        "on the engine holding their trunk. cached share: "
        "cached / prompt tokens over all requests; through the router a node's children go as "
        "single requests, and a sibling prefilled after another counts their shared prompt as "
        "cached, where a batch (1 engine, client routing) reports it uncached for every child "
        "(SGLang's `fcfs` report): compare cached shares among router arms only.",
        "`cache_aware` matches the request's ids as text against its per-worker tree; below its "
        "balance thresholds (defaults: one worker more than 64 requests in flight ahead, and "
        "1.5×) it routes by that match only, and prompts that share a system prompt match the "
        "first worker, so requests pile onto it; past them (and always with thresholds "
        "0 / 1.0, whenever loads differ) it sends each request to the shortest queue, wherever "
        "its trunk is. `manual --assignment-mode min_group` pins each `X-SMG-Routing-Key` (the "
        "client sends its tree's key) to the worker with the fewest keys in flight when the "
        "key is first seen (a tie is random).",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}, torch {m['torch']}; other "
        "jobs may share its cores, so tokens/s and wall are noisy: the requests per engine "
        "and trunk hits are the figures that carry over.",
    ]
    chart = Chart(
        ylabel="% (median, min–max)",
        groups=[a.name for a in ARMS],
        series={
            "trunk hits": [Spread([100 * r.trunk_hits / r.second_turn for r in runs[a.name]])
                           for a in ARMS],
            "busier engine's share of requests": [
                Spread([100 * max(r.served) / sum(r.served) for r in runs[a.name]]) for a in ARMS
            ],
        },
        reference=50.0,
    )  # fmt: skip
    return Section(SLUG, TITLE, intro, header, rows, notes, chart, _headline(runs))


def spreads_and_keeps(rs: list[ArmRun]) -> tuple[bool, bool]:
    """(every repetition gave each engine at least a quarter of the requests, every
    second-turn request of every repetition ran where its trunk is)."""
    spread = all(min(r.served) >= sum(r.served) / 4 for r in rs)
    return spread, all(r.trunk_hits == r.second_turn for r in rs)


def _headline(runs: dict[str, list[ArmRun]]) -> str:
    base = [r.tok_s for r in runs[ARMS[0].name]]
    both = [a for a in ARMS[1:] if spreads_and_keeps(runs[a.name]) == (True, True)]
    one = [a for a in ARMS[1:] if not spreads_and_keeps(runs[a.name])[0]]
    split = [a for a in ARMS[1:] if not spreads_and_keeps(runs[a.name])[1]]

    def names(arms: list[Arm]) -> str:
        return ", ".join(f"`{a.name}`" for a in arms) or "none"

    speed = "; ".join(
        f"{a.name} {ratios([r.tok_s for r in runs[a.name]], base).median:.2f}×" for a in both
    )
    return (
        f"Two engines: spread over both with every trunk local: {names(both)} (tokens/s over "
        f"one engine: {speed or '—'}); one engine got most requests: {names(one)}; branches "
        f"ran away from their trunk: {names(split)}."
    )


def save(runs: dict[str, list[ArmRun]], size_name: str, startup_s: float) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"router-{size_name}.json"
    doc = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "size": asdict(SIZES[size_name]),
        "machine": machine(),
        "engines_startup_s": startup_s,
        "arms": {name: [asdict(r) | {"tok_s": r.tok_s} for r in rs] for name, rs in runs.items()},
    }
    path.write_text(json.dumps(doc, indent=1))
    return path


def sections(size: str, repeats: int = REPEATS, log: Any = None) -> list[Section]:
    """The suite's entry point: ``size`` is ``smoke`` or ``full``."""
    runs, startup = measure(SIZES[size], repeats, log)
    save(runs, size, startup)
    return [build_section(runs, SIZES[size], repeats)]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", choices=sorted(SIZES), default="smoke")
    ap.add_argument("--repeats", type=int, default=REPEATS)
    args = ap.parse_args()

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    [section] = sections(args.size, args.repeats, log)
    print(section.markdown(None))
    print(section.headline)
    print(f"({time.perf_counter() - t0:.0f} s; runs in {RESULTS / f'router-{args.size}.json'})")


if __name__ == "__main__":
    main()
