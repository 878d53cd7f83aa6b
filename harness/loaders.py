"""Reading run folders: pandas frames, Hugging Face ``datasets``, torch, and verl batches.

Why so strict: a trainer that silently gets a partial or misaligned batch learns garbage and
nobody notices. :func:`load_run` therefore either returns the whole run, checked against
:mod:`~treegym.harness.schema` (columns and types, row counts against the manifest and the
ledger, keys, parents, samples pointing at training leaves, aligned token columns), or raises a
:class:`RunLoadError` that names the file and the problem. An unfinished run (collection still
going, or killed) loads too: its finished tasks are read from their parts.

Padding conventions: :func:`collate` right-pads ``prompt_ids ++ response_ids`` (the simplest
layout for a causal LM forward); :func:`verl_batch` uses verl's layout (left-padded prompts,
right-padded responses, ``input_ids`` their concatenation).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .budget import Budget
from .export import (
    FINALIZING,
    LEDGER,
    MANIFEST,
    NODES,
    SAMPLES,
    ExportError,
    file_digest,
    group_rows,
    part_groups,
    part_paths,
    read_ledger,
)
from .schema import (
    FORMAT,
    NODES_SCHEMA,
    SCHEMA_VERSION,
    TOKEN_LEVEL_ESTIMATORS,
    advantage_column,
    samples_schema,
)
from .tree import Node, NodeStats, Tree

if TYPE_CHECKING:
    import pandas as pd
    import torch


class RunLoadError(ValueError):
    """A run folder cannot be loaded completely and correctly; the message names the file."""


class NotARunError(RunLoadError):
    """The path is not a treegym run folder."""


class SchemaVersionError(RunLoadError):
    """The run was written by a newer treegym than this one."""


@dataclass
class Run:
    """A loaded run: arrow tables (``nodes_table``, ``samples_table``), pandas frames
    (``nodes``, ``samples``, made on first use), the manifest and the ledger."""

    path: Path
    manifest: dict[str, Any]
    ledger: list[dict[str, Any]]
    nodes_table: pa.Table
    samples_table: pa.Table
    estimators: list[str] = field(default_factory=list)

    @cached_property
    def nodes(self) -> pd.DataFrame:
        return self.nodes_table.to_pandas()

    @cached_property
    def samples(self) -> pd.DataFrame:
        return self.samples_table.to_pandas()

    @property
    def complete(self) -> bool:
        """Finalized, with no task written after the last finalize."""
        return self.manifest.get("status") == "complete" and len(self.ledger) == int(
            self.manifest.get("compacted", 0)
        )

    @property
    def task_ids(self) -> list[str]:
        return [e["task_id"] for e in self.ledger]

    @property
    def budget(self) -> Budget:
        """Counters summed over the finished tasks."""
        total = Budget()
        for entry in self.ledger:
            total += Budget(**entry["budget"])
        return total

    @property
    def pad_token_id(self) -> int:
        tok = self.manifest.get("tokenizer") or {}
        pad = tok.get("pad_token_id")
        return int(pad if pad is not None else tok.get("eos_token_id") or 0)

    @property
    def temperature(self) -> float:
        """The sampling temperature of the run's logprobs (the manifest's sampling config; a
        greedy run's logprobs are untempered, so 1.0): what a trainer divides logits by to
        recompute them."""
        sampling = (self.manifest.get("config") or {}).get("sampling") or {}
        temperature = float(sampling.get("temperature", 1.0))
        return 1.0 if temperature < 1e-6 else temperature

    def trees(self) -> list[Tree]:
        """The trees rebuilt from ``nodes.parquet`` (no env states), in file order."""
        trees: dict[tuple[str, int], Tree] = {}
        by_id: dict[tuple[str, int], dict[int, Node]] = {}
        for row in self.nodes_table.to_pylist():
            key = (row["task_id"], row["tree_index"])
            if row["parent_id"] is None:
                root = _node(row, None)
                trees[key] = Tree(key[0], key[1], root, tuple(row["prompt_ids"]))
                by_id[key] = {root.id: root}
                continue
            parent = by_id[key][row["parent_id"]]  # validated: parents come first
            node = _node(row, parent)
            parent.children.append(node)
            trees[key].nodes.append(node)
            by_id[key][node.id] = node
        return list(trees.values())


def _node(row: dict[str, Any], parent: Node | None) -> Node:
    stats = NodeStats(**{k: row[k] for k in ("prompt_tokens", "cached_tokens", "env_steps",
                         "policy_s", "env_s", "restores", "restore_s", "snapshot_s")})  # fmt: skip
    return Node(
        id=row["node_id"], parent=parent, depth=row["depth"],
        generated_ids=tuple(row["generated_ids"]), logprobs=tuple(row["logprobs"]),
        closing_ids=tuple(row["closing_ids"]), observation_ids=tuple(row["observation_ids"]),
        action=row["action"], parse_error=row["parse_error"], finish_reason=row["finish_reason"],
        observation=row["observation"], info=json.loads(row["info"]), reward=row["reward"],
        ended=row["ended"], error=row["error"], stats=stats,
        policy_version=row.get("policy_version"),
    )  # fmt: skip


# ---------------------------------------------------------------------- reading files
def _check_digest(
    path: Path, expected: dict[str, Any] | None, recorded_in: str, full: bool
) -> None:
    if not expected:
        return
    size = path.stat().st_size
    if size != expected["bytes"]:
        raise RunLoadError(
            f"{path}: {size} bytes but {recorded_in} recorded {expected['bytes']} "
            "(truncated or overwritten)"
        )
    if full and file_digest(path)["sha256"] != expected["sha256"]:
        raise RunLoadError(
            f"{path}: corrupted (SHA-256 differs from the one {recorded_in} recorded)"
        )


def _read_parquet(
    path: Path,
    schema: pa.Schema,
    digest: dict[str, Any] | None = None,
    recorded_in: str = "",
    verify: bool = True,
) -> pa.Table:
    """Read and check one parquet file against ``schema`` (extra columns are kept) and,
    when known, against its recorded size and (``verify``) SHA-256."""
    if not path.is_file():
        raise RunLoadError(f"{path}: missing")
    _check_digest(path, digest, recorded_in, verify)
    try:
        table = pq.read_table(path, page_checksum_verification=True)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise RunLoadError(
            f"{path}: not a readable parquet file, truncated or corrupted ({exc})"
        ) from exc
    for f in schema:
        if f.name not in table.schema.names:
            raise RunLoadError(f"{path}: missing column {f.name!r}")
        got = table.schema.field(f.name).type
        if got != f.type:
            raise RunLoadError(f"{path}: column {f.name!r} is {got}, expected {f.type}")
        if not f.nullable and table.column(f.name).null_count:
            raise RunLoadError(f"{path}: column {f.name!r} has nulls")
    extras = [n for n in table.schema.names if n not in schema.names]
    return table.select([*schema.names, *extras])


def _manifest(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise NotARunError(f"{path}: not a directory, so not a treegym run folder")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise NotARunError(f"{path} is not a treegym run folder: no {MANIFEST}")
    try:
        manifest = json.loads(mpath.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunLoadError(f"{mpath}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise NotARunError(f"{mpath}: not a treegym run manifest (format is not {FORMAT!r})")
    version = manifest.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise RunLoadError(f"{mpath}: schema_version {version!r} is not a positive integer")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{mpath}: schema_version {version} is newer than this treegym reads "
            f"({SCHEMA_VERSION}); upgrade treegym to load this run"
        )
    if (path / FINALIZING).exists():
        raise RunLoadError(
            f"{path / FINALIZING}: a finalize was interrupted; open the folder with "
            "RunWriter(..., resume=True) to complete it"
        )
    return manifest


def load_run(path: str | Path, *, verify: bool = True) -> Run:
    """Load a run folder (finalized or still being collected), checked; see the module doc.

    ``verify=False`` skips the SHA-256 of each file (sizes, Parquet page checksums and every
    structural check still apply): for very large runs read often."""
    path = Path(path)
    manifest = _manifest(path)
    try:
        ledger = read_ledger(path)
    except ExportError as exc:
        raise RunLoadError(str(exc)) from exc
    _check_unique(path, ledger)
    estimators = list(manifest.get("estimators") or [])
    schemas = (NODES_SCHEMA, samples_schema(estimators))
    compacted = int(manifest.get("compacted", 0))
    if compacted > len(ledger):
        raise RunLoadError(
            f"{path / LEDGER}: {len(ledger)} finished tasks but the manifest says {compacted} "
            "were compacted (ledger truncated?)"
        )
    tables: tuple[list[pa.Table], list[pa.Table]] = ([], [])
    if compacted:
        rows = manifest.get("rows") or {}
        for name, schema, out in zip((NODES, SAMPLES), schemas, tables, strict=True):
            digest = (manifest.get("files") or {}).get(name)
            table = _read_parquet(path / name, schema, digest, MANIFEST, verify)
            if table.num_rows != rows.get(name):
                raise RunLoadError(
                    f"{path / name}: {table.num_rows} rows, the manifest says {rows.get(name)}"
                )
            out.append(table)
    for part, members in part_groups(ledger[compacted:]):
        for file, schema, out, key in zip(part_paths(path, part), schemas, tables,
                                          ("nodes", "samples"), strict=True):  # fmt: skip
            digest = (members[0].get("files") or {}).get(key)
            table = _read_parquet(file, schema, digest,
                                  f"{LEDGER} (task {members[0]['task_id']!r})", verify)  # fmt: skip
            wrong = group_rows(file, members, key, table.num_rows)
            if wrong:
                raise RunLoadError(wrong)
            out.append(table)
    nodes, samples = (
        pa.concat_tables(ts, promote_options="permissive") if ts else s.empty_table()
        for ts, s in zip(tables, schemas, strict=True)
    )
    _validate(path, manifest, ledger, nodes, samples, estimators)
    return Run(path, manifest, ledger, nodes, samples, estimators)


def _check_unique(path: Path, ledger: list[dict[str, Any]]) -> None:
    """A task listed twice (before its rows are read: a listed group's rows would not add up)."""
    seen = [e["task_id"] for e in ledger]
    if len(set(seen)) != len(seen):
        dup = sorted({t for t in seen if seen.count(t) > 1})
        raise RunLoadError(f"{path / LEDGER}: tasks written twice: {dup[:5]}")


def _validate(
    path: Path,
    manifest: dict[str, Any],
    ledger: list[dict[str, Any]],
    nodes: pa.Table,
    samples: pa.Table,
    estimators: list[str],
) -> None:
    where = f"{path}/{{{NODES},{SAMPLES}}}"
    run_id = manifest.get("run_id")
    for name, table in ((NODES, nodes), (SAMPLES, samples)):
        ids = set(table.column("run_id").unique().to_pylist())
        if ids - {run_id}:
            raise RunLoadError(f"{path}/{name}: rows of run(s) {sorted(ids - {run_id})}, "
                               f"the manifest's run is {run_id!r}")  # fmt: skip
    tasks = set(nodes.column("task_id").unique().to_pylist())
    seen = {e["task_id"] for e in ledger}
    if tasks - seen:
        raise RunLoadError(f"{where}: nodes of tasks not in the ledger: {sorted(tasks - seen)[:5]}")
    # node keys: unique, roots first, parents exist
    t = nodes.column("task_id").to_pylist()
    tr = nodes.column("tree_index").to_pylist()
    nid = nodes.column("node_id").to_pylist()
    par = nodes.column("parent_id").to_pylist()
    keys: set[tuple[str, int, int]] = set()
    training: set[tuple[str, int, int]] = set()
    is_training = nodes.column("training").to_pylist()
    for i, key in enumerate(zip(t, tr, nid, strict=True)):
        if key in keys:
            raise RunLoadError(f"{path}/{NODES}: node {key} appears twice")
        if par[i] is None:
            if key[2] != 0:
                raise RunLoadError(f"{path}/{NODES}: root {key} must have node_id 0")
        elif (key[0], key[1], par[i]) not in keys:
            raise RunLoadError(
                f"{path}/{NODES}: node {key} names parent {par[i]}, which is not before it"
            )
        keys.add(key)
        if is_training[i]:
            training.add(key)
    # samples point at training leaves, and their token columns line up
    st, sr, sl = (samples.column(c).to_pylist() for c in ("task_id", "tree_index", "leaf_id"))
    paths = samples.column("node_path").to_pylist()
    for i, key in enumerate(zip(st, sr, sl, strict=True)):
        if key not in keys:
            raise RunLoadError(f"{path}/{SAMPLES}: sample {key} references a node that does not "
                               f"exist in {NODES}")  # fmt: skip
        if key not in training:
            raise RunLoadError(f"{path}/{SAMPLES}: sample {key} is not a training leaf in {NODES}")
        if not paths[i] or paths[i][-1] != key[2]:
            raise RunLoadError(f"{path}/{SAMPLES}: sample {key} has node_path {paths[i]} not "
                               "ending at its leaf")  # fmt: skip
    if len(training) != samples.num_rows:
        raise RunLoadError(
            f"{path}: {len(training)} training leaves in {NODES} but {samples.num_rows} samples"
        )
    n = pc.list_value_length(samples.column("response_ids"))
    aligned = ["loss_mask", "logprobs"] + [
        f"adv_{e}_tokens" for e in estimators if e in TOKEN_LEVEL_ESTIMATORS
    ]
    for col in aligned:
        m = pc.list_value_length(samples.column(col))
        bad = pc.and_(pc.is_valid(m), pc.not_equal(m, n))
        if pc.any(bad).as_py():
            i = pc.index(bad, True).as_py()
            raise RunLoadError(
                f"{path}/{SAMPLES}: {col} of sample {samples.column('sample_id')[i]} has "
                f"{m[i]} entries for {n[i]} response_ids"
            )
    gen = pc.list_value_length(nodes.column("generated_ids"))
    lps = pc.list_value_length(nodes.column("logprobs"))
    if pc.any(pc.not_equal(gen, lps)).as_py():  # (``all`` of nothing is null, not true)
        raise RunLoadError(f"{path}/{NODES}: a node has a logprob count unlike its generated ids")


# ---------------------------------------------------------------------- datasets
def _as_run(run: Run | str | Path) -> Run:
    return run if isinstance(run, Run) else load_run(run)


def to_hf_dataset(run: Run | str | Path, table: str = "samples") -> Any:
    """The run's ``samples`` (or ``nodes``) as an in-memory Hugging Face ``datasets.Dataset``
    (same columns and arrow types; the manifest goes into ``info.description``)."""
    import datasets
    from datasets.table import InMemoryTable

    run = _as_run(run)
    if table not in ("samples", "nodes"):
        raise ValueError(f"table must be 'samples' or 'nodes', got {table!r}")
    source = run.samples_table if table == "samples" else run.nodes_table
    info = datasets.DatasetInfo(description=json.dumps(run.manifest, sort_keys=True))
    return datasets.Dataset(InMemoryTable(source.replace_schema_metadata(None)), info=info)


def _ragged(table: pa.Table, column: str, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """A list column as (flat values, offsets): row i is ``values[off[i]:off[i+1]]``."""
    arr = table.column(column).combine_chunks()
    if arr.null_count:
        raise RunLoadError(f"column {column!r} has null rows; pick another advantage column")
    offsets = arr.offsets.to_numpy()
    values = arr.values.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    return values, offsets


def _advantage_source(run: Run, advantage: str, token_level: bool | None) -> tuple[str, bool]:
    if advantage not in run.estimators:
        raise ValueError(f"run {run.path} has no '{advantage}' advantages; it has {run.estimators}")
    if token_level is None:
        token_level = advantage in TOKEN_LEVEL_ESTIMATORS
    return advantage_column(advantage, token_level), token_level


class TorchRunDataset:
    """A ``torch.utils.data.Dataset``-compatible view of a run's samples.

    Item ``i`` holds 1-D tensors ``prompt_ids``, ``response_ids``, ``loss_mask`` (int),
    ``logprobs`` (float32), ``advantages`` (float32, aligned with ``response_ids``: the
    sample's ``adv_<advantage>`` on generated tokens, or the per-token column when
    ``token_level``), and ``reward``. Use ``collate_fn=dataset.collate`` in a ``DataLoader``.
    """

    def __init__(
        self, run: Run | str | Path, advantage: str = "grpo", token_level: bool | None = None
    ) -> None:
        import torch

        self.run = _as_run(run)
        table = self.run.samples_table
        column, self.token_level = _advantage_source(self.run, advantage, token_level)
        self._prompt = _ragged(table, "prompt_ids", np.int64)
        self._response = _ragged(table, "response_ids", np.int64)
        self._mask = _ragged(table, "loss_mask", np.int64)
        self._logprobs = _ragged(table, "logprobs", np.float32)
        if self.token_level:
            self._adv_tokens = _ragged(table, column, np.float32)
        else:
            adv = table.column(column)
            if adv.null_count:
                raise RunLoadError(f"{self.run.path}/{SAMPLES}: {column} has nulls")
            self._adv = adv.to_numpy().astype(np.float32)
        self._reward = table.column("reward").to_numpy().astype(np.float32)
        self.sample_ids = table.column("sample_id").to_pylist()
        self.pad_id = self.run.pad_token_id
        self._torch = torch

    def __len__(self) -> int:
        return len(self.sample_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        torch = self._torch
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} out of range for {len(self)} samples")
        i %= len(self)

        def row(src: tuple[np.ndarray, np.ndarray]) -> torch.Tensor:
            values, off = src
            return torch.from_numpy(values[off[i] : off[i + 1]].copy())

        mask = row(self._mask)
        adv = row(self._adv_tokens) if self.token_level else mask.float() * float(self._adv[i])
        return {
            "sample_id": self.sample_ids[i],
            "prompt_ids": row(self._prompt),
            "response_ids": row(self._response),
            "loss_mask": mask,
            "logprobs": row(self._logprobs),
            "advantages": adv,
            "reward": torch.tensor(float(self._reward[i])),
        }

    def collate(self, batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return collate(batch, pad_id=self.pad_id)


def collate(batch: Sequence[dict[str, Any]], pad_id: int = 0) -> dict[str, Any]:
    """Right-pad ``prompt_ids ++ response_ids`` into ``input_ids [B, T]`` with
    ``attention_mask``, ``position_ids``, and ``loss_mask``/``logprobs``/``advantages``
    aligned to ``input_ids`` (0 on the prompt and on padding). Token ``t``'s logprob is
    predicted by the logits at ``t − 1``. Also ``prompt_lengths``, ``response_lengths``,
    ``rewards [B]`` and ``sample_ids``."""
    import torch

    if not batch:
        raise ValueError("cannot collate an empty batch")
    lengths = [len(b["prompt_ids"]) + len(b["response_ids"]) for b in batch]
    shape = (len(batch), max(lengths))
    out = {
        "input_ids": torch.full(shape, pad_id, dtype=torch.long),
        "attention_mask": torch.zeros(shape, dtype=torch.long),
        "loss_mask": torch.zeros(shape, dtype=torch.long),
        "logprobs": torch.zeros(shape, dtype=torch.float32),
        "advantages": torch.zeros(shape, dtype=torch.float32),
    }
    for i, b in enumerate(batch):
        p, n = len(b["prompt_ids"]), lengths[i]
        out["input_ids"][i, :n] = torch.cat([b["prompt_ids"], b["response_ids"]])
        out["attention_mask"][i, :n] = 1
        out["loss_mask"][i, p:n] = b["loss_mask"]
        out["logprobs"][i, p:n] = b["logprobs"]
        out["advantages"][i, p:n] = b["advantages"]
    out["position_ids"] = (out["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    out["prompt_lengths"] = torch.tensor([len(b["prompt_ids"]) for b in batch])
    out["response_lengths"] = torch.tensor([len(b["response_ids"]) for b in batch])
    out["rewards"] = torch.stack([b["reward"] for b in batch])
    out["sample_ids"] = [b["sample_id"] for b in batch]
    return out


# ---------------------------------------------------------------------- verl
def verl_batch(
    run: Run | str | Path,
    indices: Sequence[int] | None = None,
    *,
    advantage: str = "grpo",
    token_level: bool | None = None,
    prompt_length: int | None = None,
    response_length: int | None = None,
) -> dict[str, Any]:
    """Samples ``indices`` (all by default) as verl's batch dict: ``prompts [B, P]``
    (left-padded), ``responses [B, R]``, ``response_mask``, ``old_log_probs``,
    ``advantages`` (``[B, R]``, right-padded), ``input_ids``/``attention_mask``/
    ``position_ids`` over ``[B, P + R]``, ``token_level_rewards`` (the return on the last
    response token), and as numpy object arrays (verl's non-tensor batch) ``uid`` (group
    ids), ``tree_uid`` (``'<group_id>/<tree_index>'``: Tree-GRPO's intra-tree groups) and
    ``sample_id``.
    ``prompt_length``/``response_length`` pad to fixed sizes; a longer sample is an error,
    never silently cut."""
    ds = TorchRunDataset(run, advantage, token_level)
    return _verl_batch(ds, range(len(ds)) if indices is None else indices, prompt_length,
                       response_length)  # fmt: skip


def _verl_batch(
    ds: TorchRunDataset,
    indices: Sequence[int],
    prompt_length: int | None,
    response_length: int | None,
) -> dict[str, Any]:
    import torch

    idx = list(indices)
    if not idx:
        raise ValueError("verl_batch needs at least one sample")
    items = [ds[i] for i in idx]
    p_len = max(len(b["prompt_ids"]) for b in items)
    r_len = max(len(b["response_ids"]) for b in items)
    for limit, got, what in (
        (prompt_length, p_len, "prompt"),
        (response_length, r_len, "response"),
    ):
        if limit is not None and got > limit:
            longest = max(items, key=lambda b: len(b[f"{what}_ids"]))
            raise ValueError(f"sample {longest['sample_id']} has a {what} of {got} tokens, "
                             f"longer than {what}_length={limit}")  # fmt: skip
    p_len, r_len = prompt_length or p_len, response_length or r_len
    b = len(items)
    pad = ds.pad_id
    prompts = torch.full((b, p_len), pad, dtype=torch.long)
    prompt_mask = torch.zeros((b, p_len), dtype=torch.long)
    responses = torch.full((b, r_len), pad, dtype=torch.long)
    response_attn = torch.zeros((b, r_len), dtype=torch.long)
    response_mask = torch.zeros((b, r_len), dtype=torch.long)
    old_log_probs = torch.zeros((b, r_len), dtype=torch.float32)
    advantages = torch.zeros((b, r_len), dtype=torch.float32)
    rewards = torch.zeros((b, r_len), dtype=torch.float32)
    for i, item in enumerate(items):
        p, r = len(item["prompt_ids"]), len(item["response_ids"])
        prompts[i, p_len - p :] = item["prompt_ids"]
        prompt_mask[i, p_len - p :] = 1
        responses[i, :r] = item["response_ids"]
        response_attn[i, :r] = 1
        response_mask[i, :r] = item["loss_mask"]
        old_log_probs[i, :r] = item["logprobs"]
        advantages[i, :r] = item["advantages"]
        if r:
            rewards[i, r - 1] = item["reward"]
    attention_mask = torch.cat([prompt_mask, response_attn], dim=1)
    rows = ds.run.samples_table.select(["sample_id", "group_id", "tree_index"]).take(idx)
    rows = rows.to_pydict()
    uid = np.array(rows["group_id"], dtype=object)
    tree_uid = np.array([f"{g}/{t}" for g, t in zip(rows["group_id"], rows["tree_index"],
                                                       strict=True)], dtype=object)  # fmt: skip
    return {
        "prompts": prompts,
        "responses": responses,
        "response_mask": response_mask,
        "old_log_probs": old_log_probs,
        "advantages": advantages,
        "token_level_rewards": rewards,
        "input_ids": torch.cat([prompts, responses], dim=1),
        "attention_mask": attention_mask,
        "position_ids": (attention_mask.cumsum(-1) - 1).clamp(min=0),
        "uid": uid,
        "tree_uid": tree_uid,
        "sample_id": np.array(rows["sample_id"], dtype=object),
    }


def verl_batches(run: Run | str | Path, batch_size: int, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """:func:`verl_batch` over consecutive slices of ``batch_size`` samples."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    prompt_length = kwargs.pop("prompt_length", None)
    response_length = kwargs.pop("response_length", None)
    ds = TorchRunDataset(run, **kwargs)
    for start in range(0, len(ds), batch_size):
        chunk = range(start, min(len(ds), start + batch_size))
        yield _verl_batch(ds, chunk, prompt_length, response_length)
