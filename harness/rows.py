"""A finished task's rows as arrow tables: one row per node, one per training leaf.

Why numpy: a task holds thousands of nodes, and a sample row repeats the tokens of its whole
path. Building Python lists row by row cost ≈ 40 µs per node — more than encoding and
writing the rows (``bench/collector_throughput.py``'s writer). Here each token leaves Python
once (``np.fromiter`` over every node's ids), a node's turn (generated + closing +
observation ids) is laid out in one flat array, and every sample's token columns are gathered
from it by index arithmetic; arrow wraps the arrays without copying.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from itertools import chain
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .advantages import node_values
from .schema import IDS, NODES_SCHEMA, TOKEN_LEVEL_ESTIMATORS, samples_schema

if TYPE_CHECKING:
    from .runner import TaskResult
    from .tree import Node, Tree


class ExportError(RuntimeError):
    """Rows cannot be written or read as they should (the message names the task or file)."""


def json_default(value: Any) -> Any:
    """What ``json`` writes for values it does not know (dataclasses, sets, numpy scalars)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


_INFO_JSON = json.JSONEncoder(sort_keys=True, default=json_default)
"""One encoder for every node's info (``json.dumps`` with options builds one per call)."""
_FLOATS = pa.list_(pa.float32())
_MASK = pa.list_(pa.int8())


# ---------------------------------------------------------------------- flat arrays
def _flat(seqs: list[Sequence[Any]], dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """Every sequence's items in one array, and each sequence's length."""
    lengths = np.fromiter(map(len, seqs), np.int64, count=len(seqs))
    values = np.fromiter(chain.from_iterable(seqs), dtype, count=int(lengths.sum()))
    return values, lengths


def _offsets(lengths: np.ndarray) -> np.ndarray:
    """Arrow list offsets: 0, then the running total of ``lengths``."""
    out = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def _positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Indices of every element of the segments ``[start, start + length)``, in order."""
    begin = _offsets(lengths)[:-1]
    return np.repeat(starts - begin, lengths) + np.arange(int(lengths.sum()))


def _lists(lengths: np.ndarray, values: np.ndarray, type_: pa.DataType) -> pa.ListArray:
    offsets = pa.array(_offsets(lengths).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values), type=type_)


@dataclasses.dataclass(frozen=True, slots=True)
class Turns:
    """The turns of ``nodes`` (every tree of a task, in order) as flat arrays."""

    nodes: list[Node]
    tree_index: np.ndarray
    """Each node's ``Tree.index``."""
    generated: tuple[np.ndarray, np.ndarray]
    """(ids, lengths) of each node's generated ids; ``closing``/``observation`` alike."""
    closing: tuple[np.ndarray, np.ndarray]
    observation: tuple[np.ndarray, np.ndarray]
    logprobs: np.ndarray
    start: np.ndarray
    """Where each node's turn starts in ``ids``; ``length`` its size."""
    length: np.ndarray
    ids: np.ndarray
    mask: np.ndarray
    """1 on generated ids, 0 on closing and observation ids."""
    sampled: np.ndarray
    """The sampling logprob on generated ids, 0.0 elsewhere."""

    @classmethod
    def of(cls, task_id: str, trees: Sequence[Tree]) -> Turns:
        nodes = [n for t in trees for n in t.nodes]
        tree_index = np.repeat([t.index for t in trees], [len(t.nodes) for t in trees])
        gen = _flat([n.generated_ids for n in nodes], np.int32)
        logprobs, lp_len = _flat([n.logprobs for n in nodes], np.float64)
        closing = _flat([n.closing_ids for n in nodes], np.int32)
        obs = _flat([n.observation_ids for n in nodes], np.int32)
        _check_logprobs(task_id, nodes, tree_index, gen[1], lp_len)
        length = gen[1] + closing[1] + obs[1]
        start = _offsets(length)[:-1]
        ids = np.empty(int(length.sum()), np.int32)
        mask = np.zeros(len(ids), np.int8)
        sampled = np.zeros(len(ids), np.float32)
        at = _positions(start, gen[1])
        ids[at], mask[at], sampled[at] = gen[0], 1, logprobs
        ids[_positions(start + gen[1], closing[1])] = closing[0]
        ids[_positions(start + gen[1] + closing[1], obs[1])] = obs[0]
        return cls(nodes, tree_index, gen, closing, obs, logprobs, start, length, ids, mask,
                   sampled)  # fmt: skip


def _check_logprobs(task_id: str, nodes: list[Node], tree_index: np.ndarray,
                    generated: np.ndarray, logprobs: np.ndarray) -> None:  # fmt: skip
    """A generated id without its logprob (or one too many) would shift every later token."""
    bad = np.flatnonzero(generated != logprobs)
    if len(bad):
        node, tree = nodes[int(bad[0])], int(tree_index[bad[0]])
        raise ExportError(
            f"task {task_id!r} tree {tree} node {node.id}: {len(node.generated_ids)} "
            f"generated ids but {len(node.logprobs)} logprobs"
        )


def _leaves_below(tree: Tree) -> dict[int, int]:
    counts: dict[int, int] = {}
    for node in reversed(tree.nodes):  # children are created after their parents
        counts[node.id] = (
            sum(counts[c.id] for c in node.children)
            if node.children
            else int(node.parent is not None)
        )
    return counts


# ---------------------------------------------------------------------- nodes
_NODE_ATTRS = ("depth", "action", "parse_error", "finish_reason", "policy_version",
               "observation", "ended", "error")  # fmt: skip
_STAT_ATTRS = ("prompt_tokens", "cached_tokens", "env_steps", "restores", "policy_s", "env_s",
               "restore_s", "snapshot_s")  # fmt: skip


def nodes_table(result: TaskResult, run_id: str, turns: Turns | None = None) -> pa.Table:
    """One row per node of every tree of ``result`` (schema :data:`NODES_SCHEMA`)."""
    task_id = result.task.task_id
    turns = turns or Turns.of(task_id, result.trees)
    nodes, n = turns.nodes, len(turns.nodes)
    cols: dict[str, Any] = {name: list(map(attrgetter(name), nodes)) for name in _NODE_ATTRS}
    stats = [x.stats for x in nodes]
    cols.update({name: list(map(attrgetter(name), stats)) for name in _STAT_ATTRS})
    values: list[float | None] = []
    below: list[int] = []
    training: list[bool] = []
    for tree in result.trees:
        v, b = node_values(tree), _leaves_below(tree)
        kept = {x.id for x in result.training.get(tree.index, [])}
        values += [v.get(x.id) for x in tree.nodes]
        below += [b[x.id] for x in tree.nodes]
        training += [x.id in kept for x in tree.nodes]
    roots = np.fromiter((x.parent is None for x in nodes), bool, count=n)
    prompts = _flat([t.prompt_ids for t in result.trees], np.int32)
    prompt_len = np.zeros(n, np.int64)
    prompt_len[roots] = prompts[1]
    cols.update(
        run_id=[run_id] * n, task_id=[task_id] * n, tree_index=turns.tree_index,
        node_id=[x.id for x in nodes],
        parent_id=[None if x.parent is None else x.parent.id for x in nodes],
        prompt_ids=_lists(prompt_len, prompts[0], IDS),
        generated_ids=_lists(turns.generated[1], turns.generated[0], IDS),
        logprobs=_lists(turns.generated[1], turns.logprobs, pa.list_(pa.float64())),
        closing_ids=_lists(turns.closing[1], turns.closing[0], IDS),
        observation_ids=_lists(turns.observation[1], turns.observation[0], IDS),
        info=[_INFO_JSON.encode(x.info) for x in nodes],
        reward=[float(x.reward) for x in nodes], value=values, leaves_below=below,
        training=training,
    )  # fmt: skip
    return pa.Table.from_pydict({f.name: cols[f.name] for f in NODES_SCHEMA}, schema=NODES_SCHEMA)


# ---------------------------------------------------------------------- samples
def _sums(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sums of consecutive runs of ``values``, the k-th run ``counts[k]`` long (may be 0)."""
    total = _offsets(values)
    ends = _offsets(counts)
    return total[ends[1:]] - total[ends[:-1]]


def samples_table(result: TaskResult, run_id: str, estimators: Sequence[str],
                  turns: Turns | None = None) -> pa.Table:  # fmt: skip
    """One row per training leaf of ``result`` (schema :func:`samples_schema`): its path's
    turns gathered from ``turns`` (built here unless given)."""
    task_id = result.task.task_id
    turns = turns or Turns.of(task_id, result.trees)
    first, trees = {}, {t.index: t for t in result.trees}
    for tree, start in zip(result.trees, _offsets([len(t.nodes) for t in result.trees]),
                           strict=False):  # fmt: skip
        first[tree.index] = int(start)
    leaves = [(trees[i], leaf) for i in sorted(result.training) for leaf in result.training[i]]
    paths = [tree.path(leaf) for tree, leaf in leaves]
    path_len = np.fromiter(map(len, paths), np.int64, count=len(paths))
    at = np.fromiter((first[t.index] + x.id for (t, _), p in zip(leaves, paths, strict=True)
                      for x in p), np.int64, count=int(path_len.sum()))  # fmt: skip
    seg_len = turns.length[at]
    response_len = _sums(seg_len, path_len)
    seg_begin = _offsets(seg_len)[:-1] - np.repeat(_offsets(response_len)[:-1], path_len)
    take = _positions(turns.start[at], seg_len)
    prompts = _flat([t.prompt_ids for t, _ in leaves], np.int32)
    keys = [(t.index, leaf.id) for t, leaf in leaves]
    cols: dict[str, Any] = {
        "run_id": [run_id] * len(leaves), "sample_id": [f"{task_id}/{i}/{n}" for i, n in keys],
        "task_id": [task_id] * len(leaves), "group_id": [task_id] * len(leaves),
        "tree_index": [i for i, _ in keys], "leaf_id": [n for _, n in keys],
        "node_path": _lists(path_len, np.fromiter((x.id for p in paths for x in p), np.int32,
                                                  count=len(at)), IDS),
        "num_turns": [sum(not x.partial for x in p) for p in paths],
        "turn_offsets": _lists(path_len, seg_begin.astype(np.int32), IDS),
        "prompt_ids": _lists(prompts[1], prompts[0], IDS),
        "response_ids": _lists(response_len, turns.ids[take], IDS),
        "loss_mask": _lists(response_len, turns.mask[take], _MASK),
        "logprobs": _lists(response_len, turns.sampled[take], _FLOATS),
        "reward": [float(sum(x.reward for x in p)) for p in paths],
        "ended": [leaf.ended for _, leaf in leaves],
        "policy_version": [leaf.policy_version for _, leaf in leaves],
    }  # fmt: skip
    for name in estimators:
        adv = result.advantages.get(name)
        cols[f"adv_{name}"] = [adv.per_leaf.get(k) if adv else None for k in keys]
        if name in TOKEN_LEVEL_ESTIMATORS:
            per_turn = [adv.per_turn.get(k) if adv else None for k in keys]
            _check_turn_values(task_id, name, keys, paths, per_turn)
            cols[f"adv_{name}_tokens"] = _token_values(per_turn, path_len, seg_len,
                                                       turns.mask[take])  # fmt: skip
    schema = samples_schema(estimators)
    return pa.Table.from_pydict({f.name: cols[f.name] for f in schema}, schema=schema)


def _check_turn_values(task_id: str, name: str, keys: list[tuple[int, int]],
                       paths: list[list[Node]], per_turn: list[Any]) -> None:  # fmt: skip
    for (tree, leaf), path, values in zip(keys, paths, per_turn, strict=True):
        if values is not None and len(values) != len(path):
            raise ExportError(
                f"task {task_id!r} tree {tree} leaf {leaf}: estimator {name!r} has "
                f"{len(values)} turn values for {len(path)} turns"
            )


def _token_values(per_turn: list[Sequence[float] | None], path_len: np.ndarray,
                  seg_len: np.ndarray, mask: np.ndarray) -> pa.ListArray:  # fmt: skip
    """Each turn's value on the turn's generated ids, 0.0 elsewhere; null for a leaf
    without values."""
    valid = np.array([v is not None for v in per_turn], bool)
    have = np.repeat(valid, path_len)
    seg_value = np.zeros(len(have))
    seg_value[have] = np.fromiter(chain.from_iterable(v for v in per_turn if v is not None),
                                  np.float64, count=int(have.sum()))  # fmt: skip
    tokens = np.where(mask == 1, np.repeat(seg_value, seg_len), 0.0).astype(np.float32)
    lengths = np.where(valid, _sums(seg_len, path_len), 0)
    offsets = pa.array(_offsets(lengths).astype(np.int32))
    return pa.ListArray.from_arrays(
        offsets, pa.array(tokens[np.repeat(have, seg_len)]), type=_FLOATS, mask=pa.array(~valid)
    )
