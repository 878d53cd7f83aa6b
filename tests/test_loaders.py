"""Loaders on the hand-built run (tests/hand_run.py): every ``RunLoadError`` branch of
``load_run`` given a folder broken in exactly that way (with the file digests rewritten to
match, so the check under test is the one that fires), and token-level advantages, logprobs and
rewards through ``TorchRunDataset`` and ``verl_batch`` against the values worked out by hand."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from tests import hand_run
from treegym.harness import RunLoadError, RunWriter, TorchRunDataset, load_run, verl_batch
from treegym.harness.export import file_digest


@pytest.fixture(scope="module")
def finalized(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hand") / "run"
    hand_run.write(path)
    return path


@pytest.fixture(scope="module")
def unfinished(tmp_path_factory) -> Path:
    """The same tasks, written but never finalized: rows in parts, counts in the ledger."""
    path = tmp_path_factory.mktemp("hand") / "parts-run"
    w = RunWriter(path, config={"env": "hand-built"}, estimators=list(hand_run.ESTIMATOR_NAMES))
    w.write_all(hand_run.results())
    w.close()
    return path


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "broken"
    shutil.copytree(src, dst)
    return dst


def _manifest(run: Path, **changes) -> dict:
    manifest = json.loads((run / "manifest.json").read_text())
    manifest.update(changes)
    (run / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def _rewrite(run: Path, name: str, change) -> None:
    """Replace ``name`` (nodes/samples.parquet) by ``change(table)`` and record its new size,
    SHA-256 and row count in the manifest, as a writer would have."""
    table = change(pq.read_table(run / name))
    pq.write_table(table, run / name)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["files"][name] = file_digest(run / name)
    manifest["rows"][name] = table.num_rows
    (run / "manifest.json").write_text(json.dumps(manifest))


def _set(table: pa.Table, column: str, row: int, value) -> pa.Table:
    values = table.column(column).to_pylist()
    values[row] = value
    i = table.schema.get_field_index(column)
    field = table.schema.field(i)
    return table.set_column(i, field, pa.array(values, type=field.type))


def _row(table: pa.Table, task: str, tree: int, node: int, id_column: str = "node_id") -> int:
    keys = zip(*(table.column(c).to_pylist() for c in ("task_id", "tree_index", id_column)),
               strict=True)  # fmt: skip
    return next(i for i, k in enumerate(keys) if k == (task, tree, node))


def _drop_last_ledger_line(run: Path) -> None:
    lines = (run / "ledger.jsonl").read_text().splitlines(keepends=True)
    (run / "ledger.jsonl").write_text("".join(lines[:-1]))


def _ledger(run: Path, change) -> None:
    entries = [json.loads(x) for x in (run / "ledger.jsonl").read_text().splitlines()]
    entries = change(entries)
    (run / "ledger.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))


def _move_row(table: pa.Table, src: int, dst: int) -> pa.Table:
    order = list(range(table.num_rows))
    order.insert(dst, order.pop(src))
    return table.take(order)


N, S = "nodes.parquet", "samples.parquet"
A2 = ("a", 0, 2)  # the won leaf n2
BROKEN_FINALIZED = {
    "ledger truncated": (lambda r: _drop_last_ledger_line(r),
                         "ledger.jsonl: 1 finished tasks but the manifest says 2 were compacted"),
    "manifest row count": (lambda r: _manifest(r, rows={N: 8, S: 4}),
                           "nodes.parquet: 9 rows, the manifest says 8"),
    "schema_version": (lambda r: _manifest(r, schema_version=0),
                       "manifest.json: schema_version 0 is not a positive integer"),
    "another run's rows": (lambda r: _rewrite(r, S, lambda t: _set(t, "run_id", 0, "other")),
                           "samples.parquet: rows of run(s) ['other']"),
    "nodes of a task not in the ledger": (
        lambda r: _rewrite(r, N, lambda t: _set(t, "task_id", 8, "zzz")),
        "nodes of tasks not in the ledger: ['zzz']"),
    "a node twice": (lambda r: _rewrite(r, N, lambda t: pa.concat_tables([t, t.slice(4, 1)])),
                     "nodes.parquet: node ('a', 0, 4) appears twice"),
    "root id": (lambda r: _rewrite(r, N, lambda t: _set(t, "node_id", _row(t, "b", 1, 0), 7)),
                "nodes.parquet: root ('b', 1, 7) must have node_id 0"),
    "parent after its child": (
        lambda r: _rewrite(r, N, lambda t: _move_row(t, _row(t, "a", 0, 1), 3)),
        "nodes.parquet: node ('a', 0, 2) names parent 1, which is not before it"),
    "sample of a non-training leaf": (
        lambda r: _rewrite(r, N, lambda t: _set(t, "training", _row(t, *A2), False)),
        "samples.parquet: sample ('a', 0, 2) is not a training leaf in nodes.parquet"),
    "node_path off its leaf": (
        lambda r: _rewrite(r, S, lambda t: _set(t, "node_path", _row(t, *A2, "leaf_id"), [1, 3])),
        "samples.parquet: sample ('a', 0, 2) has node_path [1, 3] not ending at its leaf"),
    "training leaves vs samples": (
        lambda r: _rewrite(r, N, lambda t: _set(t, "training", _row(t, "a", 0, 3), True)),
        "5 training leaves in nodes.parquet but 4 samples"),
    "logprob count": (
        lambda r: _rewrite(r, N, lambda t: _set(t, "logprobs", _row(t, "a", 0, 1), [-0.1])),
        "nodes.parquet: a node has a logprob count unlike its generated ids"),
    "missing column": (lambda r: _rewrite(r, S, lambda t: t.drop_columns(["reward"])),
                       "samples.parquet: missing column 'reward'"),
    "column type": (
        lambda r: _rewrite(r, S, lambda t: t.set_column(t.schema.get_field_index("reward"),
                                                        "reward", pc.cast(t["reward"],
                                                                          pa.float32()))),
        "samples.parquet: column 'reward' is float, expected double"),
    "nulls in a required column": (
        lambda r: _rewrite(r, N, lambda t: t.set_column(t.schema.get_field_index("action"),
                                                        pa.field("action", pa.string()),
                                                        pa.array([None] * t.num_rows,
                                                                 pa.string()))),
        "nodes.parquet: column 'action' has nulls"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BROKEN_FINALIZED))
def test_each_load_check_names_the_file_and_the_problem(finalized, tmp_path, case):
    assert load_run(finalized).complete  # the unbroken folder loads
    run = _copy(finalized, tmp_path)
    breaks, message = BROKEN_FINALIZED[case]
    breaks(run)
    with pytest.raises(RunLoadError, match=re.escape(message)) as info:
        load_run(run)
    assert str(run) in str(info.value) and "\n" not in str(info.value)


BROKEN_UNFINISHED = {
    "part rows vs ledger": (
        lambda es: [{**e, "nodes": e["nodes"] + 1} if e["task_id"] == "b" else e for e in es],
        "000000.nodes.parquet: 9 rows, the ledger says 10 (tasks 'a'..'b')"),  # one group
    "a task written twice": (lambda es: [*es, es[0]], "ledger.jsonl: tasks written twice: ['a']"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BROKEN_UNFINISHED))
def test_ledger_checks_of_an_unfinished_run(unfinished, tmp_path, case):
    assert not load_run(unfinished).complete and len(load_run(unfinished).task_ids) == 2
    run = _copy(unfinished, tmp_path)
    change, message = BROKEN_UNFINISHED[case]
    _ledger(run, change)
    with pytest.raises(RunLoadError, match=re.escape(message)):
        load_run(run)


# ---------------------------------------------------------------------- token-level values
def _per_token(key, per_turn):
    """Spread one value per turn over that turn's generated ids (0 on closing/observation)."""
    response, mask = hand_run.RESPONSES[key]
    out, turn, in_gen = [], -1, False
    for m in mask:
        if m and not in_gen:
            turn += 1
        in_gen = bool(m)
        out.append(per_turn[turn] if m else 0.0)
    assert len(out) == len(response)
    return out


LOGPROBS = {  # per response token: the turn's logprobs on generated ids, 0 elsewhere
    ("a", 0, 2): [-0.1, -0.2, 0, 0, 0, 0, -0.3, -0.4, -0.5, 0],
    ("a", 0, 4): [-0.7, -0.8, 0, 0],
    ("b", 0, 1): [-0.9, 0, 0],
    ("b", 1, 1): [-0.9, 0, 0],
}


def _key(sample_id: str) -> tuple[str, int, int]:
    task, tree, leaf = sample_id.split("/")
    return task, int(tree), int(leaf)


def test_torch_dataset_token_level_node_value_and_sample_level_grpo(finalized):
    node_value = TorchRunDataset(finalized, "node_value")
    grpo = TorchRunDataset(finalized, "grpo")
    assert node_value.token_level and not grpo.token_level
    assert len(node_value) == len(grpo) == len(hand_run.RETURNS)
    for i in range(len(node_value)):
        item, flat = node_value[i], grpo[i]
        key = _key(item["sample_id"])
        response, mask = hand_run.RESPONSES[key]
        assert item["response_ids"].tolist() == response and item["loss_mask"].tolist() == mask
        want = _per_token(key, hand_run.NODE_VALUE_TURNS[key])
        assert item["advantages"].tolist() == pytest.approx(want)
        assert flat["advantages"].tolist() == pytest.approx([hand_run.GRPO[key] * m for m in mask])
        assert item["logprobs"].tolist() == pytest.approx(LOGPROBS[key])
        assert item["reward"].item() == hand_run.RETURNS[key]


def test_verl_batch_places_advantages_logprobs_and_rewards(finalized):
    batch = verl_batch(finalized, advantage="node_value", response_length=12)
    ids = TorchRunDataset(finalized, "node_value").sample_ids
    assert batch["responses"].shape == (len(ids), 12)
    for i, sample_id in enumerate(ids):
        key = _key(sample_id)
        response, mask = hand_run.RESPONSES[key]
        r = len(response)
        pad = [0.0] * (12 - r)
        assert batch["responses"][i, :r].tolist() == response
        assert batch["response_mask"][i].tolist() == mask + [0] * (12 - r)
        want = _per_token(key, hand_run.NODE_VALUE_TURNS[key]) + pad
        assert batch["advantages"][i].tolist() == pytest.approx(want)
        assert batch["old_log_probs"][i].tolist() == pytest.approx(LOGPROBS[key] + pad)
        # the return sits on the last response token, nothing anywhere else
        rewards = [0.0] * 12
        rewards[r - 1] = hand_run.RETURNS[key]
        assert batch["token_level_rewards"][i].tolist() == pytest.approx(rewards)
        assert batch["uid"][i] == key[0]
        assert batch["tree_uid"][i] == f"{key[0]}/{key[1]}"  # Tree-GRPO's intra-tree group
        assert batch["sample_id"][i] == sample_id
    prompts = {"a": [1, 2, 3, 4], "b": [5, 6, 7, 8, 9]}
    for i, sample_id in enumerate(ids):  # left-padded to the longest prompt (5)
        prompt = prompts[_key(sample_id)[0]]
        assert batch["prompts"][i, 5 - len(prompt) :].tolist() == prompt
    assert torch.equal(batch["input_ids"], torch.cat([batch["prompts"], batch["responses"]], 1))
    trees = {(_key(s)[0], _key(s)[1]) for s in ids}
    assert len(set(batch["tree_uid"])) == len(trees) > len(set(batch["uid"]))


def test_a_token_level_column_with_null_rows_is_refused(finalized, tmp_path):
    run = _copy(finalized, tmp_path)
    _rewrite(run, S, lambda t: _set(t, "adv_node_value_tokens", 0, None))
    with pytest.raises(RunLoadError, match="'adv_node_value_tokens' has null rows"):
        TorchRunDataset(run, "node_value")
    _rewrite(run, S, lambda t: _set(t, "adv_grpo", 0, None))
    with pytest.raises(RunLoadError, match="adv_grpo has nulls"):
        TorchRunDataset(run, "grpo")
