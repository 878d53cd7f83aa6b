"""Collect tree rollouts into a run folder, resumably: the loop a trainer's data job runs.

This is the library form of ``treegym collect``: build a ``Runner`` yourself, then hand it to
``treegym.harness.collect.collect`` (the same loop the command line runs).

    python examples/collect_run.py RUN --tasks 20 [--policy scripted|hf] [--model PATH]
                                   [--env treegym/ToyRooms-v0] [--resume]

Finished tasks are on disk as soon as they finish; kill it at any point and run it again with
``--resume``: it skips the finished tasks and writes only the rest (no duplicates). The folder
loads with ``treegym.load_run(RUN)`` whether or not it was finalized.

Tasks are ToyRooms layouts ``toy-0 … toy-{N-1}`` (seed = task number), so the example needs
no game files; any env id whose tasks are given by ``{"task": ...}`` works the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from treegym.harness import SAMPLERS, InProcessExecutor, Runner, Task
from treegym.harness.collect import collect as run_collect
from treegym.policies import ReActTemplate, SamplingParams, ScriptedPolicy


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="run folder to write")
    ap.add_argument("--tasks", type=int, default=8, help="number of toy tasks")
    ap.add_argument("--env", default="treegym/ToyRooms-v0")
    ap.add_argument("--max-steps", type=int, default=8, help="env step limit per episode")
    ap.add_argument("--policy", choices=("scripted", "hf"), default="scripted")
    ap.add_argument("--model", type=Path, default=None, help="model folder (default: embedded)")
    ap.add_argument("--sampler", choices=sorted(SAMPLERS), default="tree_grpo")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--context-length", type=int, default=1024)
    ap.add_argument("--resume", action="store_true", help="continue the run in RUN")
    ap.add_argument("--no-finalize", action="store_true", help="leave the parts uncompacted")
    ap.add_argument(
        "--pause", type=float, default=0.0, help="seconds to sleep after each finished task"
    )
    return ap.parse_args(argv)


def build_runner(args: argparse.Namespace) -> Runner:
    from transformers import AutoTokenizer

    from treegym.policies import embedded_model_path

    model = args.model or embedded_model_path()
    if args.policy == "hf":
        from treegym.policies import HFPolicy

        policy: Any = HFPolicy(model)
        template = ReActTemplate.for_model(policy.tokenizer, model)  # as the model was trained
    else:
        template = ReActTemplate.for_model(AutoTokenizer.from_pretrained(model), model)
        policy = ScriptedPolicy(template, "expert", epsilon=0.5, seed=0)
    sampler = SAMPLERS[args.sampler]()
    executor = InProcessExecutor(args.env, {"max_episode_steps": args.max_steps})
    sampling = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    return Runner(policy=policy, template=template, executor=executor, sampler=sampler,
                  sampling=sampling, context_length=args.context_length, concurrency=1)  # fmt: skip


async def collect(args: argparse.Namespace) -> dict[str, Any]:
    runner = build_runner(args)
    tasks = [Task(f"toy-{i}", {"task": i}, seed=i) for i in range(args.tasks)]
    config = {"env": args.env, "env_kwargs": {"max_episode_steps": args.max_steps}}

    def started(writer: Any, todo: list[Task]) -> None:
        print(f"{len(writer.finished)} tasks already finished, {len(todo)} to go", flush=True)

    def wrote(entry: dict[str, Any], result: Any) -> None:
        print(f"wrote {entry['task_id']}: {entry['samples']} samples", flush=True)
        if args.pause:
            time.sleep(args.pause)  # blocks the loop on purpose: nothing else may progress

    done = await run_collect(
        runner,
        tasks,
        args.run,
        config=config,
        resume=args.resume,
        finalize=not args.no_finalize,
        on_start=started,
        on_result=wrote,
    )
    return done.manifest


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    manifest = asyncio.run(collect(parse_args(argv)))
    print(f"run {manifest['run_id']}: status {manifest['status']}")
    return manifest


if __name__ == "__main__":
    main()
