"""An env that raises inside ``step`` or ``restore`` during a real collection into a run
folder: that branch is recorded as failed with the error text (on disk, in ``nodes``), the rest
of the tree and the run go on, and no row is lost."""

from __future__ import annotations

import asyncio

import pytest

import treegym
from tests.faults.conftest import record, rows_in_memory, rows_on_disk
from treegym.envs.toy import ToyRoomsEnv
from treegym.harness import InProcessExecutor, Runner, Task, TreeGRPOSampler, load_run
from treegym.harness.collect import collect
from treegym.policies import ScriptedPolicy


class StepRaises(ToyRoomsEnv):
    def _step(self, action):
        if action == "jump into pit":
            raise RuntimeError("pit physics exploded")
        return super()._step(action)


class RestoreRaises(ToyRoomsEnv):
    def restore(self, snapshot):
        if getattr(snapshot, "depth", 0) == 2:
            raise RuntimeError("state copy corrupted at depth 2")
        return super().restore(snapshot)


@pytest.mark.parametrize("where,message", [("StepRaises", "pit physics exploded"),
                                           ("RestoreRaises", "state copy corrupted")])  # fmt: skip
def test_env_error_fails_its_branch_and_the_run_goes_on(template, tmp_path, where, message):
    env_id = f"tests/{where}-v0"
    treegym.register(env_id, f"tests.faults.test_env_errors:{where}")
    tasks = [Task(f"toy-{i}", {"task": i}, seed=i) for i in range(8)]

    async def go():
        runner = Runner(policy=ScriptedPolicy(template, "random", seed=1), template=template,
                        executor=InProcessExecutor(env_id, {"max_episode_steps": 8}),
                        sampler=TreeGRPOSampler(m=2, n=3, l=2, k=3), concurrency=4)  # fmt: skip
        results = []
        await collect(runner, tasks, tmp_path / "run", on_result=lambda e, r: results.append(r))
        return results

    results = asyncio.run(go())
    run = load_run(tmp_path / "run")
    expected, found = rows_in_memory(results), rows_on_disk(run)
    failed = run.nodes[run.nodes.ended == "failed"]
    clean = all(r.error is None for r in results) and len(failed) > 0  # no task failed whole
    record(f"env raises in {where[:-6].lower()}", ok=run.complete and clean, expected=expected,
           found=found)  # fmt: skip
    assert run.complete and sorted(run.task_ids) == sorted(t.task_id for t in tasks)
    assert clean and all(message in e for e in failed.error), failed.error.tolist()[:2]
    assert (run.nodes.ended != "failed").sum() > len(failed)  # the rest of the trees grew
    assert found == expected


def test_fail_fast_raises_on_the_first_branch_error(template, tmp_path):
    from treegym.harness.runner import BranchFailedError

    treegym.register("tests/StepRaisesFF-v0", "tests.faults.test_env_errors:StepRaises")
    tasks = [Task(f"toy-{i}", {"task": i}, seed=i) for i in range(8)]
    results = []

    async def go():
        runner = Runner(policy=ScriptedPolicy(template, "random", seed=1), template=template,
                        executor=InProcessExecutor("tests/StepRaisesFF-v0"),
                        sampler=TreeGRPOSampler(m=2, n=3, l=2, k=3), fail_fast=True)  # fmt: skip
        await collect(runner, tasks, tmp_path / "run", on_result=lambda e, r: results.append(r))

    with pytest.raises(BranchFailedError, match="pit physics exploded"):
        asyncio.run(go())
    run = load_run(tmp_path / "run")  # the tasks finished before the error are on disk
    expected, found = rows_in_memory(results), rows_on_disk(run)
    record("env raises in step (fail_fast)", ok=not run.complete, expected=expected, found=found)
    assert not run.complete and len(run.task_ids) == len(results) < len(tasks)
    assert found == expected
