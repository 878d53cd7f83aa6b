"""An env worker process SIGKILLed mid-run: the executor respawns it, replays the lost node
states, and the run ends identical to an unfaulted seeded run (deterministic policy); a worker
that dies on every retry of one step fails that branch only, after exactly ``max_respawns``
respawns; and a respawn never closes a pipe another caller's batch is still inside."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import os
import signal
import threading

from tests.faults.conftest import record, rows_in_memory, rows_on_disk
from treegym.harness import ChainSampler, ProcessExecutor, Runner, Task, TreeGRPOSampler, load_run
from treegym.harness.collect import collect
from treegym.harness.executor import EnvWorkerCore, EnvWorkerDied
from treegym.policies import ScriptedPolicy

ENV = "treegym/ToyRooms-v0"
TASKS = [Task(f"toy-{i}", {"task": i}, seed=i) for i in range(4)]
FAULT = "env worker SIGKILL mid-expansion"


def _kill(worker) -> None:
    os.kill(worker.proc.pid, signal.SIGKILL)
    worker.proc.join(30)


class KillingExecutor(ProcessExecutor):
    """SIGKILLs the worker a step is routed to just before the ``at``-th step calls, i.e.
    between the policy's answer and the env step (mid-expansion)."""

    def __init__(self, *args, at=(), **kw) -> None:
        super().__init__(*args, **kw)
        self.at, self.steps, self.kills = set(at), 0, 0

    async def step(self, state, action):
        self.steps += 1
        if self.steps in self.at:
            _kill(self.workers[state.worker])
            self.kills += 1
        return await super().step(state, action)


_POISONED = contextvars.ContextVar("poisoned", default=False)


class PoisonedExecutor(ProcessExecutor):
    """The ``poison``-th step call kills its worker on every attempt, while the worker holds
    the request (as an env that crashes its process on one action would): the worker is
    stopped, the request sent, then the worker killed, so it can never answer first."""

    def __init__(self, *args, poison: int, **kw) -> None:
        super().__init__(*args, **kw)
        self.poison, self.steps, self.failure = poison, 0, None

    async def step(self, state, action):
        self.steps += 1
        if self.steps != self.poison:
            return await super().step(state, action)
        token, before = _POISONED.set(True), self.respawns
        try:
            return await super().step(state, action)
        except EnvWorkerDied as exc:
            self.failure = (state.worker, self.respawns - before, str(exc))
            raise
        finally:
            _POISONED.reset(token)

    async def _call(self, worker, method, *args):
        if not (_POISONED.get() and method == "step"):
            return await super()._call(worker, method, *args)
        w = self.workers[worker % self.n_workers]
        async with w.lock:
            os.kill(w.proc.pid, signal.SIGSTOP)
            send = w.conn.send
            w.conn.send = lambda msg: (send(msg), _kill(w))
            return await asyncio.to_thread(w.roundtrip, (method, args))


def _path(leaf):
    out = []
    while leaf is not None:
        out.append((leaf.action, leaf.observation, leaf.reward, leaf.ended, leaf.error,
                    leaf.generated_ids, leaf.observation_ids))  # fmt: skip
        leaf = leaf.parent
    return tuple(reversed(out))


def _canonical(results):
    """Every leaf's full path (node ids follow completion order, so they are not compared)."""
    return {
        (r.task.task_id, t.index): sorted(_path(leaf) for leaf in t.leaves())
        for r in results for t in r.trees
    }  # fmt: skip


def _collect(template, executor, sampler, out):
    """A real collection into ``out``; returns the in-memory results and the loaded run."""
    results = []

    async def go():
        policy = ScriptedPolicy(template, "expert", epsilon=0.5, seed=3)
        runner = Runner(policy=policy, template=template, executor=executor, sampler=sampler,
                        concurrency=4, seed=0)  # fmt: skip
        await collect(runner, TASKS, out, on_result=lambda e, r: results.append(r))

    asyncio.run(go())
    return sorted(results, key=lambda r: r.task.task_id), load_run(out)


def test_killed_worker_is_respawned_and_the_run_is_identical(template, tmp_path):
    sampler = TreeGRPOSampler(m=2, n=2, l=1, k=3)
    clean_ex = KillingExecutor(ENV, n_workers=2)
    clean, clean_run = _collect(template, clean_ex, sampler, tmp_path / "clean")
    assert clean_ex.respawns == 0 and clean_ex.steps > 40
    ex = KillingExecutor(ENV, n_workers=2, at={3, 12, 25, 40})
    faulted, run = _collect(template, ex, sampler, tmp_path / "faulted")
    expected, found = rows_on_disk(clean_run), rows_on_disk(run)
    identical = _canonical(faulted) == _canonical(clean)
    record(FAULT, ok=identical and run.complete, expected=expected, found=found)
    # every kill is one death, recovered by exactly one respawn
    assert ex.kills == 4 and ex.respawns == 4
    assert [r.error for r in faulted] == [None] * len(faulted)
    assert [n.error for r in faulted for t in r.trees for n in t.nodes if n.ended == "failed"] == []
    assert identical
    assert found == expected == rows_in_memory(clean)


def test_a_worker_that_dies_every_time_fails_only_its_branch(template, tmp_path):
    sampler = ChainSampler(3)
    clean, _ = _collect(template, ProcessExecutor(ENV, n_workers=2), sampler, tmp_path / "clean")
    ex = PoisonedExecutor(ENV, n_workers=2, poison=5)  # max_respawns: the default, 2
    faulted, run = _collect(template, ex, sampler, tmp_path / "faulted")
    expected, found = rows_in_memory(faulted), rows_on_disk(run)
    failed = [(r.task.task_id, t.index, n.error) for r in faulted for t in r.trees
              for n in t.nodes if n.ended == "failed"]  # fmt: skip
    record(FAULT + " (every retry)", ok=run.complete and len(failed) == 1, expected=expected,
           found=found)  # fmt: skip
    assert ex.failure is not None, "the poisoned step did not fail"
    worker, respawns_in_call, message = ex.failure
    # three deaths in one call: respawned twice (max_respawns=2), then EnvWorkerDied ...
    assert respawns_in_call == 2 and f"env worker {worker} died" in message
    # ... and the slot's next call respawns it once more; no other death happened
    assert ex.respawns == 3
    assert len(failed) == 1 and failed[0][2] == f"env: {message}", failed
    assert [r.error for r in faulted] == [None] * len(faulted)  # no task failed as a whole
    # every other chain is exactly the unfaulted one
    bad = failed[0][:2]
    want = {k: v for k, v in _canonical(clean).items() if k != bad}
    assert {k: v for k, v in _canonical(faulted).items() if k != bad} == want
    assert found == expected


class _WatchedLock(asyncio.Lock):
    """Sets ``reached`` when someone waits for it while a batch holds it (the respawner)."""

    def __init__(self, reached: asyncio.Event) -> None:
        super().__init__()
        self.reached = reached

    async def acquire(self):
        if self.locked():
            self.reached.set()
        return await super().acquire()


def test_respawn_waits_for_a_batch_still_inside_the_dead_workers_pipe():
    """Regression for 7d3cc4d (CI once saw step/rebuild replies swapped). Caller 1's batch
    finds the worker dead and caller 1 respawns it while caller 2's batch (queued behind it)
    is inside its send on the old pipe, with the file descriptor already taken. Closing that
    pipe then would let the new worker's pipe reuse the descriptor, so caller 2's stale request
    reaches the new worker and every later reply goes to the wrong caller. The respawn must
    wait for caller 2's batch to leave."""
    gates = [(threading.Event(), threading.Event()) for _ in range(2)]  # (inside, open)
    writes = itertools.count()

    def gated_write(fd, buf):  # multiprocessing's own send, paused after reading the fd
        n = next(writes)
        if n < len(gates):  # caller 1's batch (write 0), caller 2's batch (write 1)
            gates[n][0].set()
            gates[n][1].wait(60)
        return os.write(fd, buf)

    async def go():
        ex = ProcessExecutor(ENV, n_workers=1)
        try:
            a = (await ex.reset(0, {"task": 0}, 0)).state
            b = (await ex.reset(0, {"task": 1}, 1)).state
            old = ex.workers[0]
            reached = asyncio.Event()
            old.lock = _WatchedLock(reached)
            old.conn._send = functools.partial(type(old.conn)._send, old.conn, write=gated_write)
            close = old.conn.close
            old.conn.close = lambda: (reached.set(), close())
            _kill(old)
            c1 = asyncio.create_task(ex.step(a, "look"))
            assert await asyncio.to_thread(gates[0][0].wait, 60), "caller 1 never sent"
            c2 = asyncio.create_task(ex.step(b, "look"))
            while not old.batcher._queue:  # caller 2 waits behind caller 1's batch
                await asyncio.sleep(0)
            gates[0][1].set()
            assert await asyncio.to_thread(gates[1][0].wait, 60), "caller 2 never sent"
            # the respawner either closes the pipe (the bug) or waits for caller 2's batch
            await asyncio.wait_for(reached.wait(), 60)
            gates[1][1].set()
            return await asyncio.wait_for(asyncio.gather(c1, c2), 120), ex.respawns
        finally:
            for _, gate in gates:
                gate.set()
            await ex.close()

    (out_a, out_b), respawns = asyncio.run(go())
    core = EnvWorkerCore(ENV)
    for key, seed, out in (("a", 0, out_a), ("b", 1, out_b)):
        core.reset(key, seed, {"task": seed})
        want = core.step(core.at[key], "look")
        assert (out.obs, out.reward, out.info) == (want.obs, want.reward, want.info)
    assert respawns == 1
