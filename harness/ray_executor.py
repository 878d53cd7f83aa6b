"""Env workers as Ray actors: the same :class:`EnvWorkerCore` as the process pool, on a cluster.

Each actor wraps one :class:`~treegym.harness.executor.EnvWorkerCore`; a node's native
snapshot stays inside the actor that made it, and the :class:`StateHandle`'s ``worker`` index
names that actor, so expanding a node is always scheduled onto the actor that already holds its
state (a restore in place there; nothing travels but the action and the observation). Tasks are
pinned to actors by the runner's affinity (``worker = task index % n_workers``), exactly like
:class:`~treegym.harness.executor.ProcessExecutor`, so a seeded run gives the same trees.

Ray is the distributed engine: ``RayExecutor(env_id, n_workers=8, address="ray://head:10001")``
or ``address="auto"`` joins a running cluster; with no address a local Ray starts (and is shut
down again by :meth:`close`). An actor that dies (node lost, OOM, ``ray.kill``) is replaced by a
new actor and the lost node states are re-created there by deterministic replay of each
handle's recipe (reset seed, options, actions since reset), like the process pool's recovery,
so the run's trees are unchanged. After ``max_respawns`` deaths of one slot within a call (or
with ``max_respawns=0``) the branch fails with an :class:`EnvWorkerDied` naming the actor;
other work goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from .executor import (
    Call,
    CallBatcher,
    EnvWorkerCore,
    EnvWorkerDied,
    EnvWorkerError,
    Outcome,
    RecoveringExecutor,
    serve_calls,
)


class RayUnavailableError(EnvWorkerError):
    """Ray is not installed, or the cluster at the given address cannot be reached."""


class _EnvActor:
    """Actor body: one :class:`EnvWorkerCore` (envs per task, snapshots per node)."""

    def __init__(
        self, env_id: str, env_kwargs: dict[str, Any], worker: int, first_snap: int = 0
    ) -> None:
        self.core = EnvWorkerCore(env_id, env_kwargs, worker)
        self.core._next = first_snap  # a replacement numbers its snapshots after its predecessor

    def call_batch(self, calls: list[Call]) -> list[Outcome]:
        """Serve a batch (one RPC for all of it); env errors come back per call."""
        return serve_calls(self.core, calls)

    def ping(self) -> int:
        return self.core.worker


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - ray is a dependency
        raise RayUnavailableError(f"the ray executor needs `ray` ({exc})") from None
    return ray


class RayExecutor(RecoveringExecutor):
    """``n_workers`` Ray actors, each holding pooled envs and the snapshots it made.

    ``address``: ``None`` starts a local Ray (``num_cpus`` CPUs, no dashboard) unless one is
    already initialised in this process; ``"auto"`` or ``"ray://host:port"`` / ``"host:port"``
    joins a cluster. ``connect_timeout_s`` bounds how long an unreachable address may take.
    """

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any] | None = None,
        n_workers: int = 2,
        *,
        address: str | None = None,
        num_cpus: int | None = None,
        actor_cpus: float = 0.5,
        connect_timeout_s: float = 30.0,
        init_kwargs: dict[str, Any] | None = None,
        max_respawns: int = 2,
    ) -> None:
        if n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}")
        ray = _ray()
        self._init_recovery(n_workers, max_respawns)
        self._owns_ray = False
        _probe(address, connect_timeout_s)
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False, "log_to_driver": False,
                "configure_logging": False, **(init_kwargs or {}),
            }  # fmt: skip
            if address is None:
                kwargs["num_cpus"] = num_cpus if num_cpus is not None else max(2, n_workers)
            _init(ray, address, kwargs)
            self._owns_ray = True
        self._remote = ray.remote(num_cpus=actor_cpus, max_restarts=0, max_concurrency=1)(_EnvActor)
        self._env_id, self._env_kwargs = env_id, dict(env_kwargs or {})
        self.names = [f"treegym-env-{i}" for i in range(n_workers)]
        self.actors = [self._remote.remote(env_id, self._env_kwargs, i) for i in range(n_workers)]
        self.batchers = [self._batcher(i) for i in range(n_workers)]
        try:
            ray.get([a.ping.remote() for a in self.actors], timeout=max(60.0, connect_timeout_s))
        except Exception as exc:
            self._shutdown()
            raise RayUnavailableError(
                f"ray env actors did not start: {type(exc).__name__}: {exc}"
            ) from None

    def actor_id(self, worker: int) -> str:
        return self.actors[worker % self.n_workers]._actor_id.hex()

    def _describe(self, worker: int) -> str:
        i = worker % self.n_workers
        return f"ray actor {self.names[i]} (id {self.actor_id(i)[:12]})"

    async def _call(self, worker: int, method: str, *args: Any) -> Any:
        i = worker % self.n_workers
        if i in self._dead:
            raise EnvWorkerError(self._dead[i])
        return await self.batchers[i].submit(method, *args)

    def _batcher(self, i: int) -> CallBatcher:
        """One RPC per batch, to the actor slot ``i`` holds now (a replacement gets a new
        batcher: calls queued for a dead actor are answered as died and retried)."""
        actor = self.actors[i]

        async def send(calls: list[Call]) -> list[Outcome]:
            ray = _ray()
            try:
                return await actor.call_batch.remote(calls)
            except ray.exceptions.RayActorError as exc:
                text = str(exc).strip()
                cause = text.splitlines()[0] if text else type(exc).__name__
                died = f"{self._describe(i)} died: {cause}"
                return [(False, EnvWorkerDied(died)) for _ in calls]
            except ray.exceptions.RayTaskError as exc:  # not an env error: those come per call
                inner = exc.cause if getattr(exc, "cause", None) is not None else exc
                return [(False, EnvWorkerError(f"{type(inner).__name__}: {inner}")) for _ in calls]

        return CallBatcher(send)

    async def _respawn(self, worker: int, seen: int, why: str) -> None:
        """Replace a dead actor (once per death, however many callers saw it die)."""
        async with self._respawn_lock:
            if self.generation[worker] != seen:
                return
            ray = _ray()
            with contextlib.suppress(Exception):
                ray.kill(self.actors[worker])
            actor = self._remote.remote(
                self._env_id, self._env_kwargs, worker, self._max_snap[worker]
            )
            try:
                await actor.ping.remote()
            except Exception as exc:
                self._dead[worker] = f"{why}; its replacement did not start: {exc}"
                raise EnvWorkerDied(self._dead[worker]) from None
            self.actors[worker] = actor
            self.batchers[worker] = self._batcher(worker)
            self.generation[worker] += 1
            self.respawns += 1

    def _gave_up(self, worker: int, why: str) -> None:
        self._dead[worker] = why  # later calls for this slot fail at once, naming the actor

    def _shutdown(self) -> None:
        ray = _ray()
        for a in getattr(self, "actors", []):
            with contextlib.suppress(Exception):  # already dead
                ray.kill(a)
        self.actors = []
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
            self._owns_ray = False

    async def close(self) -> None:
        await asyncio.to_thread(self._shutdown)


def _probe(address: str | None, timeout: float) -> None:
    """Ray's GCS client retries an unreachable address for minutes: a TCP probe first turns
    that into one clear line within ``timeout``."""
    import socket

    if address in (None, "auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=min(timeout, 10)).close()
    except (OSError, ValueError) as exc:
        raise RayUnavailableError(
            f"cannot reach the Ray cluster at {address!r}: {type(exc).__name__}: {exc}"
        ) from None


def _init(ray: Any, address: str | None, kwargs: dict[str, Any]) -> None:
    """``ray.init``, with any failure as one clear line."""
    try:
        ray.init(address=address, **kwargs)
    except Exception as exc:
        text = " ".join(str(exc).split())
        if len(text) > 240:
            text = text[:240] + " …"
        where = f"the Ray cluster at {address!r}" if address else "a local Ray"
        raise RayUnavailableError(
            f"cannot connect to {where}: {type(exc).__name__}: {text}"
        ) from None
