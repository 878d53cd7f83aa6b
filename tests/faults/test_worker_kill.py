"""An env worker process SIGKILLed mid-run: the executor respawns it, replays the lost node
states, and the run ends identical to an unfaulted seeded run (deterministic policy)."""

from __future__ import annotations

import asyncio
import os
import signal

from tests.faults.conftest import record
from treegym.harness import ProcessExecutor, Runner, Task, TreeGRPOSampler
from treegym.harness.executor import EnvWorkerDied
from treegym.policies import Policy, ScriptedPolicy

TASKS = [Task(f"toy-{i}", {"task": i}, seed=i) for i in range(4)]
FAULT = "env worker SIGKILL mid-expansion"


class KillingPolicy(Policy):
    """Passes through to a scripted policy; before its ``at``-th call, SIGKILLs a worker."""

    def __init__(self, inner: Policy, executor: ProcessExecutor, at: set[int]) -> None:
        self.inner, self.executor, self.at, self.calls, self.kills = inner, executor, at, 0, 0

    async def generate(self, requests):
        out = await self.inner.generate(requests)
        self.calls += 1
        if self.calls in self.at:  # between the policy answer and the env steps: mid-expansion
            w = self.executor.workers[self.calls % self.executor.n_workers]
            os.kill(w.proc.pid, signal.SIGKILL)
            self.kills += 1
        return out


def _path(leaf):
    out = []
    while leaf is not None:
        out.append((leaf.action, leaf.observation, leaf.reward, leaf.ended, leaf.error,
                    leaf.generated_ids, leaf.observation_ids))  # fmt: skip
        leaf = leaf.parent
    return tuple(reversed(out))


def _canonical(results):
    """Every leaf's full path (node ids follow completion order, so they are not compared)."""
    return [
        (r.task.task_id, t.index, sorted(_path(leaf) for leaf in t.leaves()))
        for r in results for t in r.trees
    ]  # fmt: skip


def _run(template, kill_at=()):
    async def go():
        ex = ProcessExecutor("treegym/ToyRooms-v0", n_workers=2)
        inner = ScriptedPolicy(template, "expert", epsilon=0.5, seed=3)
        policy = KillingPolicy(inner, ex, set(kill_at))
        sampler = TreeGRPOSampler(m=2, n=2, l=1, k=3)
        runner = Runner(policy=policy, template=template, executor=ex, sampler=sampler,
                        concurrency=4, seed=0)  # fmt: skip
        try:
            res = sorted([r async for r in runner.run(TASKS)], key=lambda r: r.task.task_id)
            return res, ex.respawns, policy.kills
        finally:
            await ex.close()

    return asyncio.run(go())


def test_killed_worker_is_respawned_and_the_run_is_identical(template):
    clean, respawns, _ = _run(template)
    assert respawns == 0
    faulted, respawns, kills = _run(template, kill_at={3, 12, 25, 40})
    assert kills == 4 and respawns >= 1
    assert [r.error for r in faulted] == [None] * len(faulted)
    assert [n.error for r in faulted for t in r.trees for n in t.nodes if n.ended == "failed"] == []
    assert _canonical(faulted) == _canonical(clean)
    n_nodes = [sum(len(t.nodes) for r in rs for t in r.trees) for rs in (clean, faulted)]
    lost = n_nodes[0] - n_nodes[1]
    assert lost == 0
    record(FAULT, ok=True, rows_lost=lost)


def test_a_worker_that_dies_every_time_fails_only_its_branch_with_a_clear_error():
    async def go():
        ex = ProcessExecutor("treegym/ToyRooms-v0", n_workers=1, max_respawns=1)
        try:
            out = await ex.reset(0, {"task": 0}, 0)
            for _ in range(2):
                os.kill(ex.workers[0].proc.pid, signal.SIGKILL)
                ex.workers[0].proc.join(5)
                try:
                    await ex.step(out.state, "look")
                except EnvWorkerDied as exc:
                    return str(exc), ex.respawns
                # first kill: recovered; kill again without letting it recover twice
                ex.max_respawns = 0
            return None, ex.respawns
        finally:
            await ex.close()

    error, respawns = asyncio.run(go())
    assert error is not None and "env worker 0 died" in error and respawns == 1
    record(FAULT + " (repeated)", ok=True)
