"""The columns of a run folder's ``nodes.parquet`` and ``samples.parquet``, defined once.

Why one module: the writer (:mod:`~treegym.harness.export`), the loaders
(:mod:`~treegym.harness.loaders`), the README and every trainer adapter read the names, types
and meanings from here, so they cannot drift apart. Each field carries its documentation (and,
where a trainer has an equivalent, that trainer's field name) as Parquet field metadata, so a
file describes itself to anyone who opens it with pyarrow.

* ``nodes.parquet`` — one row per tree node (the root is the reset state and holds the prompt).
  The shared trunk of a tree is stored once here.
* ``samples.parquet`` — one row per *training* leaf (the leaves the sampler kept), with the
  full multi-turn sequence materialised for trainers: ``prompt_ids`` is the root prompt and
  ``response_ids`` every turn's generated + closing + observation ids along the leaf's path.
  ``loss_mask`` is 1 exactly on generated ids; ``logprobs`` is the sampling logprob there
  and 0.0 elsewhere.

Advantage columns depend on the sampler's estimators: ``adv_<name>`` (one float per sample)
for each, and ``adv_<name>_tokens`` (one float per response token: each turn's value
broadcast over that turn's generated tokens, 0 elsewhere) for the per-turn estimators in
:data:`TOKEN_LEVEL_ESTIMATORS`.

Bump :data:`SCHEMA_VERSION` on any change a reader of an older version would misread (a
renamed, retyped or re-meant column); adding an optional column does not need a bump.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

SCHEMA_VERSION = 1
"""Version of the run-folder format written by this treegym (``manifest.json``'s
``schema_version`` and each file's ``treegym.schema_version`` metadata)."""

FORMAT = "treegym-run"
"""``manifest.json``'s ``format``: what tells a run folder from any other folder."""

TOKEN_LEVEL_ESTIMATORS = frozenset({"node_value"})
"""Estimators whose advantage is per turn: they also get an ``adv_<name>_tokens`` column."""

IDS = pa.list_(pa.int32())
MASK = pa.list_(pa.int8())


def _f(
    name: str,
    type_: pa.DataType,
    doc: str,
    *,
    nullable: bool = False,
    verl: str = "",
    trl: str = "",
    openrlhf: str = "",
) -> pa.Field:
    meta = {"doc": doc}
    meta.update({k: v for k, v in (("verl", verl), ("trl", trl), ("openrlhf", openrlhf)) if v})
    return pa.field(name, type_, nullable=nullable, metadata=meta)


_NODE_FIELDS = [
    _f("run_id", pa.string(), "Id of the run (manifest's run_id); constant within a folder."),
    _f("task_id", pa.string(), "The task this tree grew from (Task.task_id)."),
    _f("tree_index", pa.int32(), "Which tree of the task (Tree-GRPO grows M per task)."),
    _f("node_id", pa.int32(), "Node id within its tree, in creation order; the root is 0."),
    _f("parent_id", pa.int32(), "Parent's node_id; null for the root.", nullable=True),
    _f("depth", pa.int32(), "Turns from the root (root = 0): the node's turn number."),
    _f("prompt_ids", IDS, "Root only: system prompt + first observation ids; empty elsewhere."),
    _f("generated_ids", IDS, "Ids the policy generated in this turn (loss mask 1)."),
    _f(
        "logprobs",
        pa.list_(pa.float64()),
        "Sampling logprob of each generated id (temperature applied; exact, float64).",
    ),
    _f("closing_ids", IDS, "End token the template appended to a cut generation (mask 0)."),
    _f("observation_ids", IDS, "The env's answer as the model saw it (mask 0)."),
    _f("action", pa.string(), "What the env received (parsed action or the malformed marker)."),
    _f("parse_error", pa.string(), "Why the action could not be parsed, if so.", nullable=True),
    _f("finish_reason", pa.string(), "stop | length | abort ('' for the root)."),
    _f(
        "policy_version",
        pa.string(),
        "Weight version of the policy that generated this node (null: the engine reports none).",
        nullable=True,
    ),
    _f("observation", pa.string(), "The env's text answer (the root: the first observation)."),
    _f("info", pa.string(), "The env's info dict after this turn, as JSON."),
    _f("reward", pa.float64(), "Reward of this turn's env step."),
    _f(
        "ended",
        pa.string(),
        "Why the trajectory stops here: terminated | truncated | context | budget | failed.",
        nullable=True,
    ),
    _f("error", pa.string(), "Exception text when this branch failed.", nullable=True),
    _f(
        "value",
        pa.float64(),
        "V(node): mean return of the leaves below (a leaf: its own return); null if none.",
        nullable=True,
    ),
    _f("leaves_below", pa.int32(), "Leaves in this node's subtree (a leaf counts itself)."),
    _f("training", pa.bool_(), "A leaf the sampler kept for training (has a samples row)."),
    _f("prompt_tokens", pa.int32(), "Prompt length of the request that made this node."),
    _f("cached_tokens", pa.int32(), "Of those, served from the engine's prefix cache."),
    _f("env_steps", pa.int32(), "Env steps this node cost."),
    _f("restores", pa.int32(), "Env restores this node cost."),
    _f("policy_s", pa.float64(), "Seconds of the policy request that made this node."),
    _f("env_s", pa.float64(), "Seconds of env stepping for this node."),
    _f("restore_s", pa.float64(), "Seconds of env restores for this node."),
    _f("snapshot_s", pa.float64(), "Seconds of env snapshots for this node."),
]

_SAMPLE_FIELDS = [
    _f("run_id", pa.string(), "Id of the run (manifest's run_id)."),
    _f(
        "sample_id",
        pa.string(),
        "'<task_id>/<tree_index>/<leaf_id>': unique within the run.",
        openrlhf="labels",
    ),
    _f("task_id", pa.string(), "The task: the GRPO group of this sample."),
    _f(
        "group_id",
        pa.string(),
        "GRPO group key (the task id): samples sharing it are normalised together.",
        verl="uid",
    ),
    _f("tree_index", pa.int32(), "Which tree of the task (Tree-GRPO's intra-tree group)."),
    _f("leaf_id", pa.int32(), "node_id of the leaf in nodes.parquet."),
    _f(
        "node_path",
        IDS,
        "node_ids from the root's first child down to the leaf: one per turn, or per segment "
        "for treepo (a turn may span several partial nodes).",
    ),
    _f("num_turns", pa.int32(), "Env turns in the trajectory (node_path minus partial nodes)."),
    _f(
        "turn_offsets",
        IDS,
        "Start of each node_path entry's ids in response_ids (entry k spans [offset k, "
        "offset k+1)).",
    ),
    _f(
        "prompt_ids",
        IDS,
        "The root prompt (system prompt + first observation).",
        verl="prompts",
        trl="prompt_ids",
        openrlhf="sequences (the first prompt_len ids, unpadded)",
    ),
    _f(
        "response_ids",
        IDS,
        "Every turn's generated + closing + observation ids along the path.",
        verl="responses",
        trl="completion_ids",
        openrlhf="sequences (after the prompt)",
    ),
    _f(
        "loss_mask",
        MASK,
        "Aligned with response_ids: 1 exactly on generated ids, 0 on closing/observation ids.",
        verl="response_mask",
        trl="env_mask",
        openrlhf="action_mask (over sequences[1:]: 0 on the prompt)",
    ),
    _f(
        "logprobs",
        pa.list_(pa.float32()),
        "Aligned with response_ids: sampling logprob where loss_mask is 1, 0.0 elsewhere.",
        verl="old_log_probs",
        trl="logprobs (read only by its vLLM importance correction)",
        openrlhf="rollout_log_probs (aligned like action_mask)",
    ),
    _f(
        "reward",
        pa.float64(),
        "Trajectory return: sum of the turns' rewards.",
        verl="token_level_rewards (at the last response token)",
        trl="a reward function's value (integrations.trl.env_reward)",
        openrlhf="rewards",
    ),
    _f("ended", pa.string(), "Why the leaf stopped (see nodes.ended).", nullable=True),
    _f(
        "policy_version",
        pa.string(),
        "Weight version of the policy that generated the leaf's last turn (treegym train "
        "collects a round with one version); its logprobs are that policy's: the PPO ratio's "
        "old policy.",
        nullable=True,
    ),
]

#: Columns whose values repeat (text, enums): Parquet dictionary-encodes them.
DICTIONARY_COLUMNS = (
    "run_id", "task_id", "group_id", "action", "parse_error", "finish_reason", "observation",
    "info", "ended", "error", "policy_version",
)  # fmt: skip


def _with_meta(fields: Sequence[pa.Field], table: str) -> pa.Schema:
    return pa.schema(
        fields,
        metadata={"treegym.schema_version": str(SCHEMA_VERSION), "treegym.table": table},
    )


NODES_SCHEMA = _with_meta(_NODE_FIELDS, "nodes")


def advantage_fields(estimators: Sequence[str]) -> list[pa.Field]:
    """``adv_<name>`` for each estimator, plus ``adv_<name>_tokens`` for per-turn ones."""
    out = []
    for name in estimators:
        out.append(
            _f(
                f"adv_{name}",
                pa.float64(),
                f"Advantage of the whole trajectory under the '{name}' estimator "
                "(broadcast over loss_mask for token-level trainers).",
                nullable=True,
                verl="advantages (× response_mask)",
                trl="reward of integrations.trl.treegym_advantage, scale_rewards='none'",
                openrlhf="advantages (× action_mask)",
            )
        )
        if name in TOKEN_LEVEL_ESTIMATORS:
            out.append(
                _f(
                    f"adv_{name}_tokens",
                    pa.list_(pa.float32()),
                    f"Per-token '{name}' advantage aligned with response_ids: each turn's value "
                    "on that turn's generated ids, 0 elsewhere.",
                    nullable=True,
                    verl="advantages",
                    trl="(none: TRL takes one advantage per completion)",
                    openrlhf="advantages",
                )
            )
    return out


def samples_schema(estimators: Sequence[str]) -> pa.Schema:
    """The samples schema of a run whose sampler computes ``estimators``."""
    return _with_meta([*_SAMPLE_FIELDS, *advantage_fields(estimators)], "samples")


def advantage_column(estimator: str, token_level: bool = False) -> str:
    """Column name of an estimator's advantage (token-level only for per-turn estimators)."""
    if token_level and estimator not in TOKEN_LEVEL_ESTIMATORS:
        raise ValueError(
            f"estimator '{estimator}' has no token-level column; per-turn estimators: "
            f"{sorted(TOKEN_LEVEL_ESTIMATORS)}"
        )
    return f"adv_{estimator}_tokens" if token_level else f"adv_{estimator}"


#: Trainer field → run-folder column (:func:`~treegym.harness.loaders.verl_batch`'s mapping).
VERL_FIELDS = {
    "prompts": "prompt_ids (left-padded)",
    "responses": "response_ids (right-padded)",
    "response_mask": "loss_mask",
    "old_log_probs": "logprobs",
    "advantages": "adv_<estimator> × loss_mask, or adv_<estimator>_tokens",
    "token_level_rewards": "reward on the last response token",
    "input_ids": "prompts ++ responses",
    "attention_mask": "1 on real tokens of input_ids",
    "position_ids": "cumsum(attention_mask) − 1, clamped at 0",
    "uid": "group_id (non-tensor)",
    "tree_uid": "group_id/tree_index (non-tensor)",
    "sample_id": "sample_id (non-tensor)",
}
#: TRL ``rollout_func`` key → samples column (:func:`treegym.integrations.trl.rollout_fields`
#: reads this; ``treegym_advantage`` ← ``adv_<estimator>`` joins them).
TRL_FIELDS = {
    "prompt_ids": "prompt_ids",
    "completion_ids": "response_ids",
    "logprobs": "logprobs",
    "env_mask": "loss_mask",
    "env_reward": "reward",
    "sample_id": "sample_id",
}
#: OpenRLHF ``Experience`` field → run-folder column (its multi-turn agent layout, see
#: :mod:`treegym.integrations.openrlhf`).
OPENRLHF_FIELDS = {
    "sequences": "prompt_ids ++ response_ids",
    "action_mask": "(0 × prompt ++ loss_mask)[1:]",
    "rollout_log_probs": "(0 × prompt ++ logprobs)[1:]",
    "advantages": "(0 × prompt ++ adv_<estimator> × loss_mask, or adv_<estimator>_tokens)[1:]",
    "rewards": "reward",
    "prompts": "group_id",
    "labels": "sample_id",
}


def describe(schema: pa.Schema) -> str:
    """A Markdown table of a schema's columns (the README's tables come from this)."""
    rows = ["| column | type | meaning | verl | TRL | OpenRLHF |", "|---|---|---|---|---|---|"]
    for f in schema:
        m = {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}
        rows.append(
            f"| `{f.name}` | {f.type} | {m.get('doc', '')} | {m.get('verl', '')} "
            f"| {m.get('trl', '')} | {m.get('openrlhf', '')} |"
        )
    return "\n".join(rows)
