"""Run-folder export: round trip trees → files → loaders, writer guarantees, bad input."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoTokenizer

import treegym
from tests import hand_run
from tests.policy_fixtures import tiny_model  # noqa: F401 - fixture
from treegym.harness import (
    SCHEMA_VERSION,
    ChainSampler,
    ExportError,
    InProcessExecutor,
    NotARunError,
    RunLoadError,
    RunMismatchError,
    Runner,
    RunWriter,
    SchemaVersionError,
    Task,
    TorchRunDataset,
    TreeGRPOSampler,
    collate,
    load_run,
    to_hf_dataset,
    verl_batch,
    verl_batches,
)
from treegym.harness.export import FINALIZING, LEDGER, file_digest, part_paths
from treegym.harness.schema import NODES_SCHEMA, describe, samples_schema
from treegym.policies import ReActTemplate, ScriptedPolicy

TASKS = [Task(f"toy-{i}", {"task": i}, seed=i) for i in range(4)]


@pytest.fixture(scope="module")
def template(tiny_model):  # noqa: F811
    return ReActTemplate(AutoTokenizer.from_pretrained(tiny_model))


def _collect(template, sampler, tasks=TASKS, **kw):
    policy = ScriptedPolicy(template, "expert", epsilon=0.5, seed=3)

    async def go():
        ex = InProcessExecutor("treegym/ToyRooms-v0", {"slip_prob": 0.3, "max_episode_steps": 10})
        runner = Runner(policy=policy, template=template, executor=ex, sampler=sampler, **kw)
        try:
            return runner, [r async for r in runner.run(tasks)]
        finally:
            await ex.close()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def collected(template):
    """A Tree-GRPO run (K < leaves, so some leaves are not for training) on four tasks."""
    return _collect(template, TreeGRPOSampler(m=2, n=2, l=2, k=3))


def _writer(path, runner, **kw):
    return RunWriter.for_runner(path, runner, config={"env": "treegym/ToyRooms-v0"}, **kw)


@pytest.fixture(scope="module")
def run_dir(collected, tmp_path_factory):
    runner, results = collected
    path = tmp_path_factory.mktemp("runs") / "run"
    with _writer(path, runner) as w:
        w.write_all(results)
    return path


def _copy(run_dir, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(run_dir, dst)
    return dst


# ---------------------------------------------------------------- round trip
NODE_FIELDS = [f.name for f in dataclasses.fields(treegym.harness.Node)
               if f.name not in ("parent", "children", "state", "stats")]  # fmt: skip


def test_nodes_round_trip_field_for_field(collected, run_dir):
    _, results = collected
    run = load_run(run_dir)
    assert run.complete and sorted(run.task_ids) == [t.task_id for t in TASKS]
    loaded = {(t.task_id, t.index): t for t in run.trees()}
    original = [(r, t) for r in results for t in r.trees]
    assert len(loaded) == len(original)
    checked = 0
    for result, tree in original:
        back = loaded[(tree.task_id, tree.index)]
        assert back.prompt_ids == tree.prompt_ids
        assert len(back.nodes) == len(tree.nodes)
        training = {n.id for n in result.training[tree.index]}
        frame = run.nodes[
            (run.nodes.task_id == tree.task_id) & (run.nodes.tree_index == tree.index)
        ]
        for node, copy, (_, row) in zip(tree.nodes, back.nodes, frame.iterrows(), strict=True):
            for name in NODE_FIELDS:
                assert getattr(copy, name) == getattr(node, name), (node.id, name)
            assert dataclasses.asdict(copy.stats) == dataclasses.asdict(node.stats)
            assert (copy.parent and copy.parent.id) == (node.parent and node.parent.id)
            assert [c.id for c in copy.children] == [c.id for c in node.children]
            below = [leaf for leaf in tree.leaves() if node in [leaf, *_ancestors(leaf)]]
            assert row.leaves_below == len(below)
            # V(node): the mean return of the leaves below it, worked out here from the paths
            returns = [sum(n.reward for n in tree.path(leaf)) for leaf in below]
            want = sum(returns) / len(returns) if returns else None
            assert (row.value if returns else None) == pytest.approx(want)
            assert row.training == (node.id in training)
            checked += 1
    assert checked == len(run.nodes) > 100


def test_hand_built_run_exports_the_values_worked_out_by_hand(tmp_path):
    """tests/hand_run.py: node values, leaves below and training flags per node; responses,
    masks, returns and advantages per sample, all from the numbers worked out on paper."""
    hand_run.write(tmp_path / "run")
    run = load_run(tmp_path / "run")
    nodes = run.nodes.set_index(["task_id", "tree_index", "node_id"])
    for (task, tree), values in hand_run.VALUES.items():
        for node_id, value in values.items():
            assert nodes.loc[(task, tree, node_id)].value == pytest.approx(value)
    assert nodes.leaves_below.to_dict() == {
        ("a", 0, 0): 3, ("a", 0, 1): 2, ("a", 0, 2): 1, ("a", 0, 3): 1, ("a", 0, 4): 1,
        ("b", 0, 0): 1, ("b", 0, 1): 1, ("b", 1, 0): 1, ("b", 1, 1): 1}  # fmt: skip
    assert set(nodes.index[nodes.training]) == set(hand_run.RETURNS)  # n3 is not kept
    samples = run.samples.set_index(["task_id", "tree_index", "leaf_id"])
    assert set(samples.index) == set(hand_run.RETURNS)
    for key, (response, mask) in hand_run.RESPONSES.items():
        row = samples.loc[key]
        assert list(row.response_ids) == response and list(row.loss_mask) == mask
        assert row.reward == hand_run.RETURNS[key]
        assert row.adv_grpo == pytest.approx(hand_run.GRPO[key])
        assert row.adv_node_value == pytest.approx(sum(hand_run.NODE_VALUE_TURNS[key]))


def _ancestors(node):
    while node.parent is not None:
        node = node.parent
        yield node


def test_samples_round_trip_exact_to_the_token(collected, run_dir):
    _, results = collected
    run = load_run(run_dir)
    rows = {r.sample_id: r for r in run.samples.itertuples()}
    n = 0
    for result in results:
        for tree in result.trees:
            for leaf in result.training[tree.index]:
                row = rows[f"{tree.task_id}/{tree.index}/{leaf.id}"]
                path = tree.path(leaf)
                assert list(row.prompt_ids) == list(tree.prompt_ids)
                assert list(row.response_ids) == tree.input_ids(leaf)[len(tree.prompt_ids) :]
                assert list(row.node_path) == [t.id for t in path]
                mask, lps = np.asarray(row.loss_mask), np.asarray(row.logprobs)
                for turn, start in zip(path, row.turn_offsets, strict=True):
                    g = len(turn.generated_ids)
                    span = slice(start, start + len(turn.turn_ids))
                    assert list(row.response_ids[span]) == list(turn.turn_ids)
                    assert mask[span].tolist() == [1] * g + [0] * (len(turn.turn_ids) - g)
                    assert lps[start : start + g].tolist() == [
                        float(np.float32(x)) for x in turn.logprobs
                    ]
                    assert not lps[start + g : span.stop].any()
                    tok = np.asarray(row.adv_node_value_tokens)[span]
                    turn_value = result.advantages["node_value"].per_turn[(tree.index, leaf.id)]
                    assert tok[:g].tolist() == pytest.approx([turn_value[path.index(turn)]] * g)
                    assert not tok[g:].any()
                assert row.reward == tree.returns(leaf) and row.num_turns == len(path)
                for est in ("grpo", "tree_grpo", "node_value"):
                    expected = result.advantages[est].per_leaf[(tree.index, leaf.id)]
                    assert getattr(row, f"adv_{est}") == expected
                assert row.group_id == tree.task_id and row.ended == leaf.ended
                n += 1
    assert n == len(run.samples) == sum(r.budget.leaves for r in results)


def test_unfinished_run_loads_the_same_rows_from_parts(collected, tmp_path):
    runner, results = collected
    w = _writer(tmp_path / "run", runner)
    w.write_all(results)
    partial = load_run(tmp_path / "run")
    assert not partial.complete and partial.manifest["status"] == "collecting"
    w.finalize()
    final = load_run(tmp_path / "run")
    assert final.complete and not any((tmp_path / "run" / "parts").iterdir())
    for a, b, key in ((partial.nodes, final.nodes, "node_id"),
                      (partial.samples, final.samples, "sample_id")):  # fmt: skip
        order = ["task_id", "tree_index", key]
        a, b = a.sort_values(order, ignore_index=True), b.sort_values(order, ignore_index=True)
        assert a.to_json() == b.to_json()
    meta = pq.ParquetFile(tmp_path / "run" / "samples.parquet")
    assert meta.num_row_groups == 1  # small tasks are gathered into one row group
    assert meta.schema_arrow.field("loss_mask").metadata[b"verl"] == b"response_mask"
    assert meta.schema_arrow.metadata[b"treegym.schema_version"] == str(SCHEMA_VERSION).encode()
    manifest = final.manifest
    assert manifest["budget"]["leaves"] == sum(r.budget.leaves for r in results)
    assert (
        manifest["policy"]["policy"] == "scripted:expert" and manifest["tokenizer"]["vocab_sha256"]
    )
    assert manifest["sampler"] == {"class": "TreeGRPOSampler", "name": "tree_grpo", "m": 2, "n": 2,
                                   "l": 2, "k": 3, "estimators": ["tree_grpo", "grpo",
                                                                  "node_value"]}  # fmt: skip
    assert manifest["versions"]["pyarrow"] == pa.__version__


def test_trunk_stored_once_in_nodes(collected, run_dir):
    run = load_run(run_dir)
    node_tokens = sum(len(x) for c in ("prompt_ids", "generated_ids", "closing_ids",
                                       "observation_ids") for x in run.nodes[c])  # fmt: skip
    trees = [t for r in collected[1] for t in r.trees]
    assert node_tokens == sum(t.unique_tokens() for t in trees)
    every_leaf = sum(len(t.input_ids(leaf)) for t in trees for leaf in t.leaves())
    assert node_tokens < every_leaf  # the shared trunks are not repeated per leaf


# ---------------------------------------------------------------- loaders
def test_hf_dataset_torch_and_verl(run_dir):
    run = load_run(run_dir)
    ds = to_hf_dataset(run)
    assert ds.num_rows == len(run.samples) and ds.column_names == list(run.samples.columns)
    assert ds[0]["response_ids"] == list(run.samples.response_ids[0])
    assert to_hf_dataset(run_dir, "nodes").num_rows == len(run.nodes)

    tds = TorchRunDataset(run, "grpo")
    loader = torch.utils.data.DataLoader(tds, batch_size=5, collate_fn=tds.collate)
    seen = 0
    for batch in loader:
        for i, sid in enumerate(batch["sample_ids"]):
            row = run.samples[run.samples.sample_id == sid].iloc[0]
            p, r = len(row.prompt_ids), len(row.response_ids)
            assert batch["input_ids"][i, : p + r].tolist() == [*row.prompt_ids, *row.response_ids]
            assert (batch["input_ids"][i, p + r :] == run.pad_token_id).all()
            assert batch["attention_mask"][i].sum() == p + r
            m = batch["loss_mask"][i].bool()
            assert batch["input_ids"][i][m].tolist() == list(np.asarray(row.response_ids)[
                np.asarray(row.loss_mask) == 1])  # fmt: skip
            assert torch.allclose(batch["advantages"][i][m], torch.tensor(row.adv_grpo).float())
            assert not batch["advantages"][i][~m].any() and not batch["logprobs"][i][~m].any()
            seen += 1
    assert seen == len(run.samples)
    assert TorchRunDataset(run, "node_value").token_level
    with pytest.raises(ValueError, match="no 'nope' advantages"):
        TorchRunDataset(run, "nope")

    vb = verl_batch(run, [0, 1, 2], advantage="tree_grpo")
    b, p_len = vb["prompts"].shape
    assert vb["input_ids"].shape == (b, p_len + vb["responses"].shape[1])
    for i in range(3):
        row = run.samples.iloc[i]
        p, r = len(row.prompt_ids), len(row.response_ids)
        assert vb["prompts"][i, p_len - p :].tolist() == list(row.prompt_ids)  # left-padded
        assert vb["responses"][i, :r].tolist() == list(row.response_ids)  # right-padded
        assert vb["response_mask"][i, :r].tolist() == list(row.loss_mask)
        assert (
            vb["position_ids"][i, p_len - p] == 0
            and vb["position_ids"][i, p_len + r - 1] == p + r - 1
        )
        assert vb["token_level_rewards"][i].sum() == pytest.approx(row.reward)
        assert torch.allclose(
            vb["advantages"][i], vb["response_mask"][i] * float(row.adv_tree_grpo)
        )
        assert vb["uid"][i] == row.group_id
    sizes = [x["responses"].shape[0] for x in verl_batches(run, 7)]
    assert sum(sizes) == len(run.samples) and max(sizes) == 7
    with pytest.raises(ValueError, match="longer than response_length=5"):
        verl_batch(run, [0], response_length=5)
    assert collate([tds[0]], pad_id=9)["input_ids"].shape[0] == 1


def test_treegym_top_level_exports(run_dir):
    assert treegym.load_run is load_run
    assert len(treegym.load_run(run_dir).samples) > 0
    assert "| `response_ids` |" in describe(samples_schema(["grpo"]))
    assert NODES_SCHEMA.field("value").metadata[b"doc"].startswith(b"V(node)")


# ---------------------------------------------------------------- writer guarantees
def test_writer_refuses_duplicates_foreign_folders_and_other_runs(collected, tmp_path):
    runner, results = collected
    w = _writer(tmp_path / "run", runner)
    w.write(results[0])
    with pytest.raises(ExportError, match=r"already in .*ledger\.jsonl"):
        w.write(results[0])
    with pytest.raises(ExportError, match=r"already holds a run .*resume=True"):
        _writer(tmp_path / "run", runner)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not a treegym run folder"):
        _writer(tmp_path / "other", runner, resume=True, force=True)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    other, _ = _collect(template=runner.template, sampler=ChainSampler(2), tasks=TASKS[:1])
    with pytest.raises(ExportError, match="being written by another RunWriter"):
        _writer(tmp_path / "run", runner, resume=True)  # two collectors on one folder
    w.close()
    with pytest.raises(RunMismatchError, match=r"differs in: .*sampler") as refused:
        _writer(tmp_path / "run", other, resume=True)
    assert refused.value.__traceback__ is not None  # kept alive: it must not hold the lock
    forced = _writer(tmp_path / "run", other, resume=True, force=True)
    assert forced.finished == {results[0].task.task_id}
    assert forced.manifest["forced_resumes"][0]["differs"]
    forced.close()
    same = _writer(tmp_path / "run", runner, resume=True)
    assert same.finished == {results[0].task.task_id}


def test_resume_removes_unfinished_parts_and_torn_ledger_lines(collected, tmp_path):
    runner, results = collected
    path = tmp_path / "run"
    w = _writer(path, runner)
    w.write(results[0])
    w.write(results[1])
    # A kill between the part files and the ledger line: parts with no ledger entry ...
    orphan_nodes, orphan_samples = part_paths(path, 2)
    shutil.copy(part_paths(path, 1)[0], orphan_nodes)
    shutil.copy(part_paths(path, 1)[1], orphan_samples.with_name(orphan_samples.name + ".tmp"))
    # ... and a kill in the middle of appending the ledger line.
    with open(path / LEDGER, "ab") as fh:
        fh.write(b'{"seq": 2, "task_id": "toy-2", "nod')
    assert load_run(path).task_ids == ["toy-0", "toy-1"]  # the torn task is not finished
    w.close()
    w2 = _writer(path, runner, resume=True)
    assert w2.finished == {"toy-0", "toy-1"}
    assert not orphan_nodes.exists() and len(list((path / "parts").iterdir())) == 4
    assert (path / LEDGER).read_bytes().endswith(b"}\n")
    w2.write_all(r for r in results if r.task.task_id not in w2.finished)
    w2.finalize()
    run = load_run(path)
    assert sorted(run.task_ids) == [t.task_id for t in TASKS]
    assert not run.samples.sample_id.duplicated().any()


def test_resume_after_finalize_appends_row_groups(collected, tmp_path):
    runner, results = collected
    path = tmp_path / "run"
    w = _writer(path, runner)
    w.write_all(results[:2])
    w.finalize()
    w.close()
    w = _writer(path, runner, resume=True)
    w.write_all(results[2:])
    w.finalize(row_group_bytes=1)  # one row group per task from here on
    run = load_run(path)
    assert run.complete and sorted(run.task_ids) == [t.task_id for t in TASKS]
    groups = pq.ParquetFile(path / "nodes.parquet")
    assert groups.num_row_groups == 1 + len(TASKS) - 2  # old group copied, new tasks appended
    tasks = [groups.read_row_group(i).column("task_id").unique().to_pylist()
             for i in range(1, groups.num_row_groups)]  # fmt: skip
    assert tasks == [[r.task.task_id] for r in results[2:]]
    assert run.manifest["budget"]["leaves"] == sum(r.budget.leaves for r in results)


def test_interrupted_finalize_is_rolled_forward(collected, run_dir, tmp_path):
    runner, _ = collected
    path = _copy(run_dir, tmp_path)
    # The state a crash leaves after the marker was written and one of three renames happened.
    for name in ("samples.parquet", "manifest.json"):
        shutil.copy(path / name, path / f"{name}.final.tmp")
    (path / FINALIZING).write_text("renaming")
    with pytest.raises(RunLoadError, match="FINALIZING: a finalize was interrupted"):
        load_run(path)
    _writer(path, runner, resume=True)
    assert not (path / FINALIZING).exists() and not list(path.glob("*.tmp"))
    assert len(load_run(path).samples) == len(load_run(run_dir).samples)


# ---------------------------------------------------------------- bad input
def _rewrite_compacted(path, name, table, *, rows_too=True):
    """Replace a compacted file as a buggy producer would, keeping the manifest's digest in
    step (so the structural checks, not the checksum, must catch what is wrong)."""
    pq.write_table(table, path / name)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"][name] = file_digest(path / name)
    if rows_too:
        manifest["rows"][name] = table.num_rows
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_truncated_and_corrupted_files_are_named(run_dir, tmp_path):
    path = _copy(run_dir, tmp_path)
    data = (path / "samples.parquet").read_bytes()
    (path / "samples.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(RunLoadError, match=r"samples\.parquet: \d+ bytes but manifest\.json "
                       r"recorded \d+ \(truncated"):  # fmt: skip
        load_run(path)
    # One flipped bit anywhere: the recorded SHA-256 catches it ...
    nodes = bytearray((path / "nodes.parquet").read_bytes())
    (path / "samples.parquet").write_bytes(data)
    chunk = (
        pq.ParquetFile(run_dir / "nodes.parquet")
        .metadata.row_group(0)
        .column(NODES_SCHEMA.get_field_index("observation_ids"))
    )
    nodes[chunk.data_page_offset + chunk.total_compressed_size - 8] ^= 0x10  # in the page body
    (path / "nodes.parquet").write_bytes(bytes(nodes))
    with pytest.raises(RunLoadError, match=r"nodes\.parquet: corrupted \(SHA-256 differs"):
        load_run(path)
    # ... and without hashing, Parquet's page checksums catch a damaged data page.
    with pytest.raises(RunLoadError, match=r"nodes\.parquet: not a readable parquet file"):
        load_run(path, verify=False)
    # A truncated file without any record of its size is still refused by Parquet itself.
    _rewrite_compacted(path, "nodes.parquet", pq.read_table(run_dir / "nodes.parquet"))
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest["files"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    (path / "samples.parquet").write_bytes(data[:-100])
    with pytest.raises(RunLoadError, match=r"samples\.parquet: not a readable parquet file"):
        load_run(path)


def test_newer_schema_and_not_a_run_are_refused(run_dir, tmp_path, collected):
    path = _copy(run_dir, tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["schema_version"] = SCHEMA_VERSION + 1
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SchemaVersionError, match=r"manifest\.json: schema_version 2 is newer"):
        load_run(path)
    with pytest.raises(ExportError, match="schema_version 2 is not one this treegym writes"):
        _writer(path, collected[0], resume=True)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(RunLoadError, match=r"manifest\.json: not valid JSON"):
        load_run(path)
    with pytest.raises(NotARunError, match=r"no manifest\.json"):
        load_run(tmp_path)
    with pytest.raises(NotARunError, match="not a directory"):
        load_run(tmp_path / "missing")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(NotARunError, match="not a treegym run manifest"):
        load_run(tmp_path)


def test_samples_referencing_missing_nodes_are_refused(run_dir, tmp_path):
    path = _copy(run_dir, tmp_path)
    nodes = pq.read_table(path / "nodes.parquet")
    leaf = load_run(run_dir).samples.iloc[0]
    cols = (nodes.column(c).to_pylist() for c in ("task_id", "tree_index", "node_id"))
    keep = [(t, tr, n) != (leaf.task_id, leaf.tree_index, leaf.leaf_id)
            for t, tr, n in zip(*cols, strict=True)]  # fmt: skip
    _rewrite_compacted(path, "nodes.parquet", nodes.filter(pa.array(keep)), rows_too=False)
    with pytest.raises(RunLoadError, match=r"nodes\.parquet: \d+ rows, the manifest says"):
        load_run(path)
    _rewrite_compacted(path, "nodes.parquet", nodes.filter(pa.array(keep)))
    with pytest.raises(RunLoadError, match="references a node that does not exist"):
        load_run(path)


def test_missing_part_and_misaligned_columns_are_refused(collected, tmp_path):
    runner, results = collected
    path = tmp_path / "run"
    w = _writer(path, runner)
    w.write_all(results[:2])  # one group commit: both tasks' rows in part 000000
    samples_part = part_paths(path, 0)[1]
    table = pq.read_table(samples_part)
    field = table.schema.field("logprobs")
    cut = pa.array([x[:-1] for x in table.column("logprobs").to_pylist()], field.type)
    pq.write_table(table.set_column(table.schema.get_field_index("logprobs"), field, cut),
                   samples_part)  # fmt: skip
    with pytest.raises(RunLoadError, match=r"000000\.samples\.parquet: \d+ bytes but ledger"):
        load_run(path)
    lines = (path / LEDGER).read_text().splitlines()
    entry = json.loads(lines[0])
    entry["files"]["samples"] = file_digest(samples_part)
    (path / LEDGER).write_text("\n".join([json.dumps(entry), lines[1], ""]))
    with pytest.raises(RunLoadError, match=r"logprobs of sample .* entries for .* response_ids"):
        load_run(path)
    samples_part.unlink()
    with pytest.raises(RunLoadError, match=r"000000\.samples\.parquet: missing"):
        load_run(path)


def test_a_group_commit_writes_one_part_pair_and_old_ledgers_still_load(collected, tmp_path):
    runner, results = collected
    path = tmp_path / "run"
    with _writer(path, runner) as w:
        w.write_all(results[:3])
        w.write(results[3])
        assert sorted(p.name for p in (path / "parts").iterdir()) == [
            "000000.nodes.parquet", "000000.samples.parquet",
            "000003.nodes.parquet", "000003.samples.parquet",
        ]  # fmt: skip
        entries = [json.loads(x) for x in (path / LEDGER).read_text().splitlines()]
        assert [e["part"] for e in entries] == [0, 0, 0, 3]
        assert [e["part_offsets"]["samples"] for e in entries[:3]] == [
            0, entries[0]["samples"], entries[0]["samples"] + entries[1]["samples"]
        ]  # fmt: skip
        unfinished = load_run(path)
    finished = load_run(path)
    assert unfinished.samples_table.equals(finished.samples_table.select(
        unfinished.samples_table.column_names))  # fmt: skip
    # a folder written before group files (one part pair per task, entries without "part")
    old = tmp_path / "old"
    w = _writer(old, runner)
    for r in results:
        w.write(r)
    w.close()
    lines = [json.loads(x) for x in (old / LEDGER).read_text().splitlines()]
    for e in lines:
        del e["part"], e["part_offsets"]
    (old / LEDGER).write_text("".join(json.dumps(e) + "\n" for e in lines))

    def rows(run):
        return run.samples_table.drop_columns(["run_id"])

    assert rows(load_run(old)).equals(rows(finished))
    with _writer(old, runner, resume=True):
        pass  # finalize reads the old parts back
    assert rows(load_run(old)).equals(rows(finished))


def test_a_task_that_failed_is_recorded_and_not_retried(template, tmp_path):
    runner, results = _collect(
        template, ChainSampler(2), [Task("bad", {"task": "castle"}), TASKS[0]]
    )
    with _writer(tmp_path / "run", runner) as w:
        w.write_all(results)
    run = load_run(tmp_path / "run")
    assert run.manifest["failed_tasks"] == ["bad"] and sorted(run.task_ids) == ["bad", "toy-0"]
    assert set(run.samples.task_id) == {"toy-0"}
    assert "bad" in _writer(tmp_path / "run", runner, resume=True).finished
    only_failed, failed_results = _collect(
        template, ChainSampler(2), [Task("bad", {"task": "castle"})]
    )
    with _writer(tmp_path / "all-failed", only_failed) as w:
        w.write_all(failed_results)
    empty = load_run(tmp_path / "all-failed")  # a run where every task failed still loads
    assert empty.manifest["failed_tasks"] == ["bad"] and len(empty.nodes) == len(empty.samples) == 0
