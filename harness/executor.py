"""Env executors: where env work runs, behind one async interface.

The runner never steps an env itself. It asks an executor to ``reset`` a task or to ``step``
from a node's state handle; the executor answers with a :class:`StepOutcome` holding a new
handle. Handles name a native snapshot kept *inside* the worker that made it, so expanding a
node again is a restore-in-place there (no replay, no new env), and stepping from the state a
worker is already at (the common case in a chain) needs no restore at all.

* :class:`InProcessExecutor` — the worker core in this process, called from a thread (tests,
  tiny runs).
* :class:`ProcessExecutor` — one worker process per slot (spawned), tasks pinned to a worker so
  their snapshots stay local; the event loop waits on pipes in threads and never blocks.

Both share :class:`EnvWorkerCore`, so they behave identically.

Calls are batched (:class:`CallBatcher`): every call made for one worker while its previous
batch is out (or within one event-loop tick) travels in *one* message — one thread hop, one
pipe write or one Ray RPC for all the children of the nodes being expanded — and the worker
serves them in order, replying per call (so a worker that dies mid-batch is blamed on the call
it was serving, not on its batch-mates). The driver's serial cost per env call is then the
pickling of that call, not a thread hop and a pipe round trip each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from treegym.envs import Snapshot, TextEnv, make


class EnvWorkerError(RuntimeError):
    """An env raised inside a worker, or the worker itself died."""


class EnvWorkerDied(EnvWorkerError):
    """The worker process itself died (killed, crashed); its snapshots are gone.

    ``blame``: whether the call that saw the death may have caused it (its request was being
    served, or the worker never served any request). A caller that finds a worker which did
    work already dead is not blamed: it just retries on the replacement, so an env that kills
    its worker on one action exhausts only that call's ``max_respawns``, not its neighbours'.
    """

    def __init__(self, message: str, blame: bool = True) -> None:
        super().__init__(message)
        self.blame = blame


@dataclass(frozen=True)
class StateHandle:
    """A node's env state: which worker holds it and under which snapshot id."""

    worker: int
    snap: int


@dataclass
class StepOutcome:
    state: StateHandle
    obs: str
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]
    env_s: float = 0.0
    restores: int = 0
    restore_s: float = 0.0
    snapshot_s: float = 0.0


@dataclass
class EnvWorkerCore:
    """Holds one env per task and the snapshots of every node it produced."""

    env_id: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    worker: int = 0

    def __post_init__(self) -> None:
        self.envs: dict[str, TextEnv] = {}
        self.snaps: dict[int, tuple[str, Snapshot | None]] = {}
        self.at: dict[str, int | None] = {}
        self._next = 0

    def _env(self, key: str) -> TextEnv:
        if key not in self.envs:
            self.envs[key] = make(self.env_id, **self.env_kwargs)
            self.at[key] = None
        return self.envs[key]

    def _keep(self, key: str, env: TextEnv, ended: bool = False) -> tuple[int, float]:
        """A handle for the env's current state. A state whose episode ended gets no native
        snapshot: nothing can be stepped from it (the runner never expands an ended node), so
        copying it would only cost time (a TextWorld snapshot is a fifth of a step)."""
        t = time.perf_counter()
        snap = None if ended else env.snapshot()
        snap_s = 0.0 if ended else time.perf_counter() - t
        self._next += 1
        self.snaps[self._next] = (key, snap)
        self.at[key] = self._next
        return self._next, snap_s

    def reset(self, key: str, seed: int, options: dict[str, Any]) -> StepOutcome:
        env = self._env(key)
        t = time.perf_counter()
        obs, info = env.reset(seed=seed, options=options)
        env_s = time.perf_counter() - t
        snap_id, snap_s = self._keep(key, env)
        return StepOutcome(StateHandle(self.worker, snap_id), obs, 0.0, False, False, info,
                           env_s=env_s, snapshot_s=snap_s)  # fmt: skip

    def step(self, snap_id: int, action: str) -> StepOutcome:
        if snap_id not in self.snaps:
            raise EnvWorkerError(f"worker {self.worker} holds no snapshot {snap_id} (released?)")
        key, snap = self.snaps[snap_id]
        env = self._env(key)
        restores, restore_s = 0, 0.0
        if snap is None and self.at[key] != snap_id:
            raise EnvWorkerError(
                f"state {snap_id} of worker {self.worker} ended its episode: it has no snapshot "
                "and nothing can be stepped from it"
            )
        if self.at[key] != snap_id:
            t = time.perf_counter()
            self.at[key] = None  # unknown until the restore succeeds
            env.restore(snap)
            restore_s, restores = time.perf_counter() - t, 1
            self.at[key] = snap_id
        t = time.perf_counter()
        try:
            obs, reward, terminated, truncated, info = env.step(action)
        except BaseException:
            self.at[key] = None
            raise
        env_s = time.perf_counter() - t
        new_id, snap_s = self._keep(key, env, ended=terminated or truncated)
        return StepOutcome(StateHandle(self.worker, new_id), obs, reward, terminated, truncated,
                           info, env_s, restores, restore_s, snap_s)  # fmt: skip

    def release(self, snap_ids: Sequence[int]) -> None:
        for snap_id in snap_ids:
            key, _ = self.snaps.pop(snap_id, (None, None))
            if key is not None and self.at.get(key) == snap_id:
                self.at[key] = None

    def rebuild(self, key: str, seed: int, options: dict[str, Any], actions: Sequence[str]) -> int:
        """Re-create a lost state by deterministic replay (reset, then the actions); its id."""
        env = self._env(key)
        self.at[key] = None
        env.reset(seed=seed, options=options)
        for action in actions:
            env.step(action)
        return self._keep(key, env)[0]

    def drop_task(self, key: str) -> None:
        env = self.envs.pop(key, None)
        self.at.pop(key, None)
        if env is not None:
            env.close()


def task_key(options: dict[str, Any]) -> str:
    return json.dumps(options, sort_keys=True)


class EnvExecutor:
    """Interface: ``reset``/``step``/``release``/``drop_task``/``close`` (all async)."""

    n_workers: int = 1

    async def reset(self, worker: int, options: dict[str, Any], seed: int) -> StepOutcome:
        raise NotImplementedError

    async def step(self, state: StateHandle, action: str) -> StepOutcome:
        raise NotImplementedError

    async def release(self, states: Sequence[StateHandle]) -> None:
        raise NotImplementedError

    async def drop_task(self, worker: int, options: dict[str, Any]) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Stop workers."""


Call = tuple[str, tuple[Any, ...]]
"""One executor call as it travels: ``(method of EnvWorkerCore, args)``."""
Outcome = tuple[bool, Any]
"""What became of one call: ``(True, result)`` or ``(False, exception to raise)``."""


class CallBatcher:
    """Coalesces the calls for one worker into batches, one batch out at a time.

    ``send`` carries a batch to the worker and returns one :data:`Outcome` per call, in order.
    A call made while a batch is out waits for the next one, so under load every batch holds
    what arrived during the previous round trip (the children of all nodes being expanded);
    an idle worker's first call waits one event-loop tick for its neighbours. Calls to one
    worker are served in the order they were made, as with one lock per worker.
    """

    def __init__(self, send: Callable[[list[Call]], Awaitable[list[Outcome]]]) -> None:
        self._send = send
        self._queue: list[tuple[Call, asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self.batches = self.calls = 0
        """Batches sent and calls in them (calls / batches: the mean batch size)."""

    def submit(self, method: str, *args: Any) -> asyncio.Future[Any]:
        """A future for ``method(*args)``'s result (or its exception)."""
        fut = asyncio.get_running_loop().create_future()
        self._queue.append(((method, args), fut))
        if self._drainer is None:
            self._drainer = asyncio.ensure_future(self._drain())
        return fut

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)  # one tick: calls made by the tasks woken together join
            while self._queue:
                batch, self._queue = self._queue, []
                self.batches, self.calls = self.batches + 1, self.calls + len(batch)
                try:
                    outcomes = await self._send([call for call, _ in batch])
                except BaseException as exc:  # the batch as a whole failed (or was cancelled)
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, fut), (ok, value) in zip(batch, outcomes, strict=True):
                    if not fut.done():  # its caller may have been cancelled
                        fut.set_result(value) if ok else fut.set_exception(value)
        finally:
            self._drainer = None


def serve_calls(core: EnvWorkerCore, calls: Sequence[Call]) -> list[Outcome]:
    """Serve a batch in this process, in order; an env's exception becomes that call's
    :class:`EnvWorkerError` and the batch goes on."""
    out: list[Outcome] = []
    for method, args in calls:
        try:
            out.append((True, getattr(core, method)(*args)))
        except EnvWorkerError as exc:
            out.append((False, exc))
        except Exception as exc:
            out.append((False, EnvWorkerError(f"{type(exc).__name__}: {exc}")))
    return out


class InProcessExecutor(EnvExecutor):
    """The worker core in this process; each batch of calls runs in a thread, in order."""

    def __init__(self, env_id: str, env_kwargs: dict[str, Any] | None = None) -> None:
        self.core = EnvWorkerCore(env_id, dict(env_kwargs or {}))
        self.batcher = CallBatcher(lambda calls: asyncio.to_thread(serve_calls, self.core, calls))

    async def _call(self, method: str, *args: Any) -> Any:
        return await self.batcher.submit(method, *args)

    async def reset(self, worker: int, options: dict[str, Any], seed: int) -> StepOutcome:
        return await self._call("reset", task_key(options), seed, options)

    async def step(self, state: StateHandle, action: str) -> StepOutcome:
        return await self._call("step", state.snap, action)

    async def release(self, states: Sequence[StateHandle]) -> None:
        await self._call("release", [s.snap for s in states])

    async def drop_task(self, worker: int, options: dict[str, Any]) -> None:
        await self._call("drop_task", task_key(options))


def _worker_main(
    conn: Any, env_id: str, env_kwargs: dict[str, Any], worker: int, first_snap: int = 0
) -> None:
    """Child-process loop: a batch ``[(method, args), ...]`` in; per call, in order,
    ``("ok", result)`` or ``("err", text, traceback)`` out (one message each, so the driver
    knows which call a death interrupted).

    ``first_snap``: a respawned worker numbers its snapshots after its predecessor's.
    """
    core = EnvWorkerCore(env_id, env_kwargs, worker)
    core._next = first_snap
    while True:
        try:
            batch = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if batch is None:
            return
        for method, args in batch:
            try:
                conn.send(("ok", getattr(core, method)(*args)))
            except Exception as exc:
                conn.send(("err", f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=3)))


class _Worker:
    def __init__(
        self, ctx: Any, env_id: str, env_kwargs: dict[str, Any], index: int, first_snap: int = 0
    ) -> None:
        self.index = index
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main,
                                args=(child, env_id, env_kwargs, index, first_snap),
                                daemon=True, name=f"treegym-env-{index}")  # fmt: skip
        self.proc.start()
        child.close()
        self.lock = asyncio.Lock()
        """Held while a batch is inside the pipe (a respawn waits for it before closing)."""
        self.served = 0
        self.batcher = CallBatcher(self._send)

    async def _send(self, calls: list[Call]) -> list[Outcome]:
        async with self.lock:
            return await asyncio.to_thread(self.roundtrip_batch, calls)

    def roundtrip_batch(self, calls: list[Call]) -> list[Outcome]:
        """Send ``calls`` in one message and read one reply per call (blocking: a thread)."""
        try:
            self.conn.send(calls)
        except (BrokenPipeError, ConnectionResetError, OSError):
            return self._died(len(calls), blame_first=not self.served)  # found dead on arrival
        out: list[Outcome] = []
        for _ in calls:
            try:
                reply = self.conn.recv()
            except (EOFError, ConnectionResetError, OSError):
                # it died serving the first call without a reply; the rest were only queued
                return out + self._died(len(calls) - len(out), blame_first=True)
            self.served += 1
            out.append((True, reply[1]) if reply[0] == "ok" else (False, EnvWorkerError(reply[1])))
        return out

    def roundtrip(self, call: Call) -> Any:
        """One call on its own (blocking): its result, or its exception raised."""
        ok, value = self.roundtrip_batch([call])[0]
        if not ok:
            raise value
        return value

    def _died(self, n: int, blame_first: bool) -> list[Outcome]:
        """``n`` calls that the dead worker will never answer: the first is blamed if it may
        have caused the death, the others only if the worker never served anything."""
        self.proc.join(1)
        text = f"env worker {self.index} died (exit code {self.proc.exitcode})"
        blames = [blame_first] + [not self.served] * (n - 1)
        return [(False, EnvWorkerDied(text, blame=b)) for b in blames]


@dataclass(frozen=True)
class _Recipe:
    """How to re-create a handle's state in a fresh worker: reset, then replay the actions."""

    generation: int
    """The worker incarnation that holds the handle's native snapshot."""
    key: str
    seed: int
    options: dict[str, Any]
    actions: tuple[str, ...]


class RecoveringExecutor(EnvExecutor):
    """Worker-death recovery shared by the process pool and the Ray executor.

    Keeps, per live handle, the recipe that re-creates its state (reset seed, options, actions
    since reset). When a worker dies it is respawned (:meth:`_respawn`, once per death however
    many callers saw it) and a handle whose snapshot died with it is rebuilt in the new worker by
    deterministic replay on its next use. A call is retried on at most ``max_respawns`` fresh
    workers; then :meth:`_gave_up` decides what happens to the slot and the call fails with
    :class:`EnvWorkerDied`. Subclasses provide ``_call`` and ``_respawn``.
    """

    def _init_recovery(self, n_workers: int, max_respawns: int) -> None:
        self.n_workers, self.max_respawns = n_workers, max_respawns
        self.generation = [0] * n_workers
        self.respawns = 0
        self._dead: dict[int, str] = {}
        self._max_snap = [0] * n_workers
        self._recipes: dict[StateHandle, _Recipe] = {}
        self._rebuilt: dict[StateHandle, tuple[int, int]] = {}  # handle -> (generation, snap)
        self._respawn_lock = asyncio.Lock()

    async def _call(self, worker: int, method: str, *args: Any) -> Any:
        raise NotImplementedError

    async def _respawn(self, worker: int, seen: int, why: str) -> None:
        raise NotImplementedError

    def _gave_up(self, worker: int, why: str) -> None:
        """A slot's worker died more than ``max_respawns`` times within one call."""

    async def _recovering(self, worker: int, attempt: Callable[[], Awaitable[Any]]) -> Any:
        worker %= self.n_workers
        deaths = 0
        while True:
            seen = self.generation[worker]
            try:
                return await attempt()
            except EnvWorkerDied as exc:
                if worker in self._dead:
                    raise
                # Only a death of the worker this attempt started on counts, and only if this
                # call may have caused it; a caller queued on an incarnation that someone else
                # has already replaced, or that it found dead, just retries.
                if self.generation[worker] == seen and exc.blame:
                    deaths += 1
                    if deaths > self.max_respawns:
                        self._gave_up(worker, str(exc))
                        raise
                await self._respawn(worker, seen, str(exc))

    def _note(self, out: StepOutcome, recipe: _Recipe) -> StepOutcome:
        w = out.state.worker
        self._max_snap[w] = max(self._max_snap[w], out.state.snap)
        self._recipes[out.state] = replace(recipe, generation=self.generation[w])
        return out

    async def _snap_of(self, state: StateHandle) -> int:
        """The id under which ``state`` lives in the current worker (replaying it if lost)."""
        recipe = self._recipes.get(state)
        gen = self.generation[state.worker]
        if recipe is None or recipe.generation == gen:
            return state.snap
        rebuilt = self._rebuilt.get(state)
        if rebuilt is not None and rebuilt[0] == gen:
            return rebuilt[1]
        snap = await self._call(state.worker, "rebuild", recipe.key, recipe.seed, recipe.options,
                                recipe.actions)  # fmt: skip
        self._max_snap[state.worker] = max(self._max_snap[state.worker], snap)
        self._rebuilt[state] = (gen, snap)
        return snap

    async def reset(self, worker: int, options: dict[str, Any], seed: int) -> StepOutcome:
        key = task_key(options)

        async def attempt() -> StepOutcome:
            return await self._call(worker, "reset", key, seed, options)

        out = await self._recovering(worker, attempt)
        return self._note(out, _Recipe(0, key, seed, options, ()))

    async def step(self, state: StateHandle, action: str) -> StepOutcome:
        async def attempt() -> StepOutcome:
            return await self._call(state.worker, "step", await self._snap_of(state), action)

        out = await self._recovering(state.worker, attempt)
        recipe = self._recipes.get(state)
        if recipe is None:  # a handle this executor did not make: no recovery for its children
            return out
        return self._note(out, replace(recipe, actions=(*recipe.actions, action)))

    async def release(self, states: Sequence[StateHandle]) -> None:
        by_worker: dict[int, list[int]] = {}
        for s in states:
            recipe = self._recipes.pop(s, None)
            rebuilt = self._rebuilt.pop(s, None)
            gen = self.generation[s.worker]
            if recipe is None or recipe.generation == gen:
                by_worker.setdefault(s.worker, []).append(s.snap)
            if rebuilt is not None and rebuilt[0] == gen:
                by_worker.setdefault(s.worker, []).append(rebuilt[1])
        for worker, snaps in by_worker.items():
            if worker % self.n_workers not in self._dead:
                with contextlib.suppress(EnvWorkerDied):  # a dead worker holds nothing
                    await self._call(worker, "release", snaps)

    async def drop_task(self, worker: int, options: dict[str, Any]) -> None:
        if worker % self.n_workers not in self._dead:
            with contextlib.suppress(EnvWorkerDied):  # a dead worker holds no env to drop
                await self._call(worker, "drop_task", task_key(options))


class ProcessExecutor(RecoveringExecutor):
    """``n_workers`` env processes; the caller pins each task to ``worker`` (its affinity).

    Worker death is recovered: a worker that dies (SIGKILL, a crash in native code) is
    respawned, and a handle whose snapshot died with it is re-created in the new worker by
    deterministic replay of its recipe (reset seed, options, actions since reset), which the
    executor keeps per live handle. A call is retried on at most ``max_respawns`` fresh workers
    before :class:`EnvWorkerDied` is raised (so an env that kills its worker every time fails
    its branch instead of looping).
    """

    def __init__(self, env_id: str, env_kwargs: dict[str, Any] | None = None, n_workers: int = 2,
                 max_respawns: int = 2):  # fmt: skip
        if n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}")
        self._ctx = multiprocessing.get_context("spawn")
        self._env_id, self._env_kwargs = env_id, dict(env_kwargs or {})
        self._init_recovery(n_workers, max_respawns)
        self.workers = [_Worker(self._ctx, env_id, self._env_kwargs, i) for i in range(n_workers)]

    async def _call(self, worker: int, method: str, *args: Any) -> Any:
        # The batcher belongs to this incarnation: a call queued before a death is answered
        # as died (and retried by _recovering), never sent on to the replacement.
        return await self.workers[worker % self.n_workers].batcher.submit(method, *args)

    async def _respawn(self, worker: int, seen: int, why: str) -> None:
        """Replace a dead worker (once per death, however many callers saw it die)."""
        async with self._respawn_lock:
            if self.generation[worker] != seen:
                return
            old = self.workers[worker]
            await asyncio.to_thread(old.proc.join, 1)
            if old.proc.is_alive():
                old.proc.kill()
                await asyncio.to_thread(old.proc.join)
            # Close the pipe only once no roundtrip is inside it (they end with EOF now that the
            # process is dead): a thread blocked in recv on a closed pipe could read from its
            # reused file descriptor, i.e. steal the new worker's replies.
            async with old.lock:
                with contextlib.suppress(OSError):
                    old.conn.close()
            self.workers[worker] = _Worker(
                self._ctx, self._env_id, self._env_kwargs, worker, self._max_snap[worker]
            )
            self.generation[worker] += 1
            self.respawns += 1

    async def close(self) -> None:
        for w in self.workers:
            if w.proc.is_alive():
                with contextlib.suppress(OSError):
                    w.conn.send(None)
            w.proc.join(5)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join()
