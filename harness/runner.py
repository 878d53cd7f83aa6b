"""The runner: grows trees for many tasks concurrently, samplers decide what to grow.

A sampler works on one task through a :class:`TaskContext`: ``new_tree()`` resets the env,
``expand(tree, node, n)`` asks the policy for ``n`` continuations of ``node`` in *one* batch
(so an engine's prefix cache computes the shared trunk once) and steps the env for each from
``node``'s state (restore in place, in the worker that holds it), and ``rollout(tree, node)``
continues one branch to its end. ``expand_segment(tree, node, n, max_tokens)`` (TreePO) caps
each child's generation: a child cut inside its turn is a ``partial`` node (no env step) whose
children continue the same turn. The runner runs up to ``concurrency`` tasks at once; policy
calls are awaited, env work goes through an :mod:`executor <treegym.harness.executor>`, so
the event loop never blocks.

Guards: every request's prompt must be exactly the parent's ids plus what was appended (the
exact-prefix check against re-tokenization drift), the context length and the per-task token
budget are checked *before* a request is sent (so neither is ever exceeded), and an env or
policy error fails only the branch it happened in: the node records the error and the tree
goes on.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from treegym.policies.protocol import GenerateRequest, GenerateResult, Policy, SamplingParams
from treegym.policies.template import Template

from .advantages import ESTIMATORS, Advantages
from .budget import Budget, task_budget
from .executor import EnvExecutor, StepOutcome
from .sampler_base import Sampler
from .template_memo import TemplateMemo
from .tree import Node, NodeStats, Tree, open_turn


class PrefixDriftError(AssertionError):
    """A prompt is not its parent's exact ids plus the appended turn (re-tokenization drift)."""


class BranchFailedError(RuntimeError):
    """A branch failed (env or policy error) and the runner was told to ``fail_fast``."""


@dataclass(frozen=True)
class Task:
    """One task: the env's reset options (e.g. ``{"task": game}``) and the reset seed."""

    task_id: str
    options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0


@dataclass
class TaskResult:
    task: Task
    trees: list[Tree]
    training: dict[int, list[Node]]
    """Leaves kept for training, per tree index (all leaves unless the sampler selects)."""
    advantages: dict[str, Advantages]
    budget: Budget
    error: str | None = None


def child_seed(seed: int, task: Task, tree: Tree, key: tuple[int, ...]) -> int:
    """Sampling seed of a branch: a function of the run's ``seed`` and of where the branch is
    in the tree, not of timing (so ``--seed`` changes the samples and nothing else does)."""
    text = f"{seed}:{task.seed}:{task.task_id}:{tree.index}:{'.'.join(map(str, key))}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


async def rollout_with(
    expand: Callable[[Tree, Node, int], Awaitable[list[Node]]], tree: Tree, node: Node
) -> Node:
    """Expand one child at a time from ``node`` until the branch ends or ``expand`` refuses.

    Shared by :class:`TaskContext` and contexts that wrap it (gates), so a wrapper's ``expand``
    governs every step of the rollout.
    """
    while True:
        children = await expand(tree, node, 1)
        if not children:
            return node
        node = children[0]
        if node.ended is not None:
            return node


class TaskContext:
    """What a sampler may do with one task (see the module docstring); implements
    :class:`~treegym.harness.sampler_base.SamplerContext`."""

    def __init__(self, runner: Runner, task: Task, worker: int) -> None:
        self.runner, self.task, self.worker = runner, task, worker
        self.trees: list[Tree] = []
        self.rng = random.Random(f"{runner.seed}:{task.task_id}:{task.seed}")
        self.generated_tokens = 0
        self._keys: dict[int, tuple[int, ...]] = {}
        self._branches: dict[int, int] = {}

    @property
    def task_id(self) -> str:
        return self.task.task_id

    @property
    def template(self) -> Template:
        return self.runner.template

    # ------------------------------------------------------------------ trees
    async def new_tree(self) -> Tree:
        r = self.runner
        out = await r.executor.reset(self.worker, self.task.options, self.task.seed)
        prompt = r.memo.prompt_ids(out.obs, out.info.get("admissible_commands"))
        root = Node(id=0, parent=None, depth=0, observation=out.obs, info=out.info, state=out.state,
                    stats=NodeStats(env_s=out.env_s, snapshot_s=out.snapshot_s))  # fmt: skip
        tree = Tree(self.task.task_id, len(self.trees), root, tuple(prompt))
        self.trees.append(tree)
        self._keys[id(root)] = ()
        return tree

    @property
    def budget_left(self) -> int | None:
        b = self.runner.token_budget
        return None if b is None else b - self.generated_tokens

    def expandable(self, node: Node) -> bool:
        return node.ended is None

    async def expand(self, tree: Tree, node: Node, n: int = 1) -> list[Node]:
        """``n`` new children of ``node`` (one turn each); ``[]`` if a guard refuses.

        Of a partial node (an unfinished turn, see :meth:`expand_segment`): the turn's rest."""
        return await self._expand(tree, node, n, self.runner.sampling.max_new_tokens)

    async def expand_segment(self, tree: Tree, node: Node, n: int, max_tokens: int) -> list[Node]:
        """``n`` new children of ``node``, each one segment of at most ``max_tokens`` generated
        ids, in one policy request batch (TreePO). A child whose generation ends the turn (the
        end token, or the turn's ``max_new_tokens`` reached) is a turn node: the whole turn's
        ids parse to the action and the env is stepped from the turn's start state. Otherwise
        the child is ``partial``: the env is not stepped and its children continue the turn."""
        if max_tokens < 1:
            raise ValueError(f"segment max_tokens must be >= 1, got {max_tokens}")
        return await self._expand(tree, node, n, max_tokens)

    async def _expand(self, tree: Tree, node: Node, n: int, max_tokens: int) -> list[Node]:
        if n < 1 or not self.expandable(node):
            return []
        r = self.runner
        start, turn_ids, turn_logprobs = open_turn(node)
        turn_max = r.sampling.max_new_tokens
        max_new = max(1, min(max_tokens, turn_max - len(turn_ids)))
        # Reserve branch ordinals before awaiting: seeds depend on position, not on timing.
        first = self._branches.get(id(node), 0)
        self._branches[id(node)] = first + n
        keys = [self._keys[id(node)] + (first + k,) for k in range(n)]
        prompt = self._prompt_for(tree, node)
        if len(prompt) + max_new > r.context_length:
            if node.is_leaf:
                node.ended = "context"
            return []
        left = self.budget_left
        if left is not None and n * max_new > left:
            if node.is_leaf:
                node.ended = "budget"
            return []
        self.generated_tokens += n * max_new  # reserved; corrected below
        sampling = (r.sampling if max_new == r.sampling.max_new_tokens
                    else replace(r.sampling, max_new_tokens=max_new))  # fmt: skip
        try:
            # Constrained choice: the admissible commands reach the engine only as this mask.
            constraint = r.template.constraint(start.info.get("admissible_commands"), turn_ids)
            requests = [
                GenerateRequest(
                    tuple(prompt),
                    replace(sampling, seed=child_seed(r.seed, self.task, tree, key)),
                    hints=start.info,
                    constraint=constraint,
                )
                for key in keys
            ]
            results = await r.policy.generate(requests)
            if len(results) != n:
                raise RuntimeError(f"policy returned {len(results)} results for {n} requests")
        except Exception as exc:
            self.generated_tokens -= n * max_new
            return [
                self._failed(tree, node, key, f"policy: {type(exc).__name__}: {exc}")
                for key in keys
            ]
        self.generated_tokens -= sum(max_new - len(res.output_ids) for res in results)
        # The batch ran together: each child gets an equal share of its longest latency, so
        # policy seconds summed over nodes count a batch once (engines report each request's
        # latency as the whole batch's).
        share = max(res.latency_s for res in results) / n
        results = [replace(res, latency_s=share) for res in results]
        steps = []
        for key, res in zip(keys, results, strict=True):
            done = (
                res.finish_reason != "length"
                or res.output_ids[-1:] == (r.memo.end_id,)
                or len(turn_ids) + len(res.output_ids) >= turn_max
            )
            if done:
                steps.append(self._step_child(tree, node, key, res, len(prompt), start, turn_ids,
                                              turn_logprobs))  # fmt: skip
            else:
                steps.append(self._partial_child(tree, node, key, res))
        if n == 1:  # a rollout's step: no task to schedule
            return [await steps[0]]
        return list(await asyncio.gather(*steps))

    async def rollout(self, tree: Tree, node: Node) -> Node:
        """Continue one branch from ``node`` until it ends (or a guard stops it)."""
        return await rollout_with(self.expand, tree, node)

    # ------------------------------------------------------------------ internals
    def _failed(self, tree: Tree, parent: Node, key: tuple[int, ...], error: str) -> Node:
        if self.runner.fail_fast:
            raise BranchFailedError(f"task {self.task.task_id!r}: {error}")
        child = tree.add_child(parent, ended="failed", error=error)
        self._keys[id(child)] = key
        return child

    async def _partial_child(
        self, tree: Tree, parent: Node, key: tuple[int, ...], result: GenerateResult
    ) -> Node:
        child = tree.add_child(
            parent, generated_ids=tuple(result.output_ids), logprobs=tuple(result.logprobs),
            finish_reason=result.finish_reason, info={"partial_turn": True}, partial=True,
            policy_version=result.weight_version,
            stats=NodeStats(prompt_tokens=result.prompt_tokens, cached_tokens=result.cached_tokens,
                            policy_s=result.latency_s),
        )  # fmt: skip
        self._keys[id(child)] = key
        return child

    async def _step_child(
        self,
        tree: Tree,
        parent: Node,
        key: tuple[int, ...],
        result: GenerateResult,
        prompt_len: int,
        start: Node | None = None,
        turn_ids: tuple[int, ...] = (),
        turn_logprobs: tuple[float, ...] = (),
    ) -> Node:
        """Finish a turn: read the whole turn (``turn_ids`` generated by partial ancestors, then
        ``result``) and step the env from the turn's start state (``start``, default
        ``parent``); the child stores only ``result``'s ids.

        An observation that would take the sequence past the context length is cut to fit and
        the branch ends ``context``: every exported sequence fits ``context_length`` (the cut
        ids are masked observation ids that no generation follows)."""
        r = self.runner
        start = parent if start is None else start
        whole = (
            replace(result, output_ids=turn_ids + tuple(result.output_ids),
                    logprobs=turn_logprobs + tuple(result.logprobs))
            if turn_ids else result
        )  # fmt: skip
        reading = r.memo.read(whole)
        try:
            out: StepOutcome = await r.executor.step(start.state, reading.action)
        except Exception as exc:
            child = self._failed(tree, parent, key, f"env: {exc}")
            child.generated_ids, child.logprobs = tuple(result.output_ids), tuple(result.logprobs)
            child.action, child.stats.env_steps = reading.action, 1
            return child
        obs_ids = r.memo.observation_ids(out.obs, out.info.get("admissible_commands"))
        ended = "terminated" if out.terminated else ("truncated" if out.truncated else None)
        room = r.context_length - prompt_len - len(result.output_ids) - len(reading.closing_ids)
        if len(obs_ids) > room:
            obs_ids = obs_ids[: max(0, room)]
            ended = ended or "context"
        child = tree.add_child(
            parent,
            generated_ids=tuple(result.output_ids), logprobs=tuple(result.logprobs),
            closing_ids=reading.closing_ids, observation_ids=tuple(obs_ids), action=reading.action,
            parse_error=reading.parse_error, finish_reason=result.finish_reason,
            policy_version=result.weight_version, observation=out.obs, info=out.info,
            reward=out.reward, ended=ended, state=out.state,
            stats=NodeStats(prompt_tokens=result.prompt_tokens, cached_tokens=result.cached_tokens,
                            env_steps=1, policy_s=result.latency_s, env_s=out.env_s,
                            restores=out.restores, restore_s=out.restore_s,
                            snapshot_s=out.snapshot_s),
        )  # fmt: skip
        self._keys[id(child)] = key
        return child

    def _prompt_for(self, tree: Tree, node: Node) -> list[int]:
        """The template's next prompt for ``node``, checked to be exactly the parent's ids plus
        the node's turn (a template that decoded and re-encoded text would fail here)."""
        if node.parent is None:
            return list(tree.prompt_ids)
        parent_ids = tree.input_ids(node.parent)
        prompt = self.runner.template.next_prompt(
            parent_ids, node.generated_ids, node.closing_ids, node.observation_ids
        )
        expected = parent_ids + list(node.turn_ids)
        if list(prompt) != expected:
            at = next((i for i, (a, b) in enumerate(zip(prompt, expected, strict=False)) if a != b),
                      min(len(prompt), len(expected)))  # fmt: skip
            raise PrefixDriftError(
                f"prompt for node {node.id} of {tree.task_id}/{tree.index} is not the parent's "
                f"ids plus the turn: first difference at token {at} of {len(expected)}"
            )
        return list(prompt)


class Runner:
    """Grows trees for tasks with a sampler, a policy, a template and an env executor."""

    def __init__(
        self,
        *,
        policy: Policy,
        template: Template,
        executor: EnvExecutor,
        sampler: Sampler,
        sampling: SamplingParams | None = None,
        context_length: int = 2048,
        token_budget: int | None = None,
        concurrency: int = 4,
        seed: int = 0,
        fail_fast: bool = False,
    ) -> None:
        """``fail_fast``: raise :class:`BranchFailedError` on the first env or policy error
        (and any task error) instead of recording the branch as failed and going on."""
        if token_budget is not None and token_budget <= 0:
            raise ValueError(f"token_budget must be positive, got {token_budget}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.policy, self.template, self.executor, self.sampler = (
            policy,
            template,
            executor,
            sampler,
        )
        sampling = sampling or SamplingParams(max_new_tokens=48)
        self.sampling = replace(
            sampling, stop_token_ids=tuple({*sampling.stop_token_ids, template.end_id})
        )
        self.context_length, self.token_budget = context_length, token_budget
        self.concurrency, self.seed = concurrency, seed
        self.fail_fast = fail_fast
        self._memo: TemplateMemo | None = None

    @property
    def memo(self) -> TemplateMemo:
        """The template's calls, memoised (:mod:`~treegym.harness.template_memo`); follows a
        replaced ``template``."""
        if self._memo is None or self._memo.template is not self.template:
            self._memo = TemplateMemo(self.template)
        return self._memo

    async def run_task(self, task: Task, worker: int = 0) -> TaskResult:
        t0 = time.perf_counter()
        ctx = TaskContext(self, task, worker)
        error = None
        try:
            await self.sampler.grow(ctx)
        except Exception as exc:  # e.g. the task cannot be reset
            if self.fail_fast:
                raise
            error = f"{type(exc).__name__}: {exc}"
        trees = ctx.trees
        training = self.sampler.select_leaves(trees, ctx.rng) if trees else {}
        advantages = (
            {name: ESTIMATORS[name](trees, training) for name in self.sampler.estimators}
            if any(training.values())
            else {}
        )
        budget = task_budget(trees, training)
        budget.wall_s = time.perf_counter() - t0
        handles = [n.state for t in trees for n in t.nodes if n.state is not None]
        try:
            await self.executor.release(handles)
            await self.executor.drop_task(worker, task.options)
        except Exception:  # a dead worker holds nothing to release
            pass
        return TaskResult(task, trees, training, advantages, budget, error)

    async def run(self, tasks: Sequence[Task]) -> AsyncIterator[TaskResult]:
        """Yield each task's result as soon as it finishes (for streaming export)."""
        gate = asyncio.Semaphore(self.concurrency)

        async def one(i: int, task: Task) -> TaskResult:
            async with gate:
                return await self.run_task(task, worker=i % max(1, self.executor.n_workers))

        # Finished futures are dropped as soon as they are yielded: holding them would keep
        # every task's trees alive until the run ends (the collector's memory would grow).
        pending = {asyncio.ensure_future(one(i, t)) for i, t in enumerate(tasks)}
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                while done:
                    yield done.pop().result()
        finally:
            for p in pending:
                p.cancel()
