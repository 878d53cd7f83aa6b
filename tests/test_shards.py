"""Sharded collection: two driver processes collect disjoint shards into one run folder, one
shard interrupted and resumed on its own, then merged and finalized — the same rows as one
driver; and a shard of another run is refused."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from treegym.harness import load_run
from treegym.harness.export import ExportError
from treegym.harness.shards import SHARDS, merge_shards, prepare_shards, shard_folder, shard_of

ROOT = Path(__file__).resolve().parents[1]
N_TASKS = 10
TIMING = ["run_id", "policy_s", "env_s", "restore_s", "snapshot_s"]
SETUP = f"""
import asyncio, sys
from transformers import AutoTokenizer
from treegym.harness import InProcessExecutor, Runner, Task, TreeGRPOSampler
from treegym.policies import ReActTemplate, ScriptedPolicy
from treegym.policies.embedded import embedded_model_path

CONFIG = {{"env": "treegym/ToyRooms-v0"}}
TASKS = [Task(f"toy-{{i}}", {{"task": i}}, seed=i) for i in range({N_TASKS})]

def runner():
    template = ReActTemplate(AutoTokenizer.from_pretrained(str(embedded_model_path())))
    return Runner(policy=ScriptedPolicy(template, "expert", epsilon=0.5, seed=3),
                  template=template, sampler=TreeGRPOSampler(m=2, n=2, l=1, k=3),
                  executor=InProcessExecutor("treegym/ToyRooms-v0", {{"max_episode_steps": 8}}),
                  concurrency=4, seed=0)
"""
DRIVER = (
    SETUP
    + """
from treegym.harness.shards import collect_shard
out, (index, count, n), mode = sys.argv[1], map(int, sys.argv[2:5]), sys.argv[5]
asyncio.run(collect_shard(runner(), TASKS[:n], out, index, count, config=CONFIG,
                          resume=mode == "resume"))
"""
)


def _setup():
    scope: dict = {}
    exec(SETUP, scope)
    return scope


def _drivers(out: Path, count: int, n: int, mode: str, which=None) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", DRIVER, str(out), str(k), str(count), str(n),
                               mode], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for k in (range(count) if which is None else which)]  # fmt: skip
    for p in procs:
        out_text = p.communicate(timeout=300)[0].decode(errors="replace")
        assert p.returncode == 0, out_text[-3000:]


def _canonical(run) -> tuple[str, str]:
    nodes = run.nodes.drop(columns=TIMING).sort_values(["task_id", "tree_index", "node_id"])
    samples = run.samples.drop(columns=["run_id"]).sort_values("sample_id")
    return nodes.to_json(orient="records"), samples.to_json(orient="records")


def test_two_sharded_drivers_give_the_rows_of_one(tmp_path):
    from treegym.harness.collect import collect

    s = _setup()
    asyncio.run(collect(s["runner"](), s["TASKS"], tmp_path / "one", config=s["CONFIG"]))
    one = load_run(tmp_path / "one")

    run = tmp_path / "sharded"
    run_id = prepare_shards(run, s["runner"](), config=s["CONFIG"])
    _drivers(run, 2, 6, "new", which=[1])  # shard 1 "killed" after its first three tasks
    _drivers(run, 2, N_TASKS, "new", which=[0])
    assert len(load_run(shard_folder(run, 1, 2)).task_ids) == 3
    _drivers(run, 2, N_TASKS, "resume", which=[1])  # ... resumed on its own
    manifest = merge_shards(run, s["runner"](), 2, config=s["CONFIG"])
    merged = load_run(run)
    assert merged.complete and manifest["tasks"] == N_TASKS and not (run / SHARDS).exists()
    assert set(merged.samples.run_id) == set(merged.nodes.run_id) == {run_id}
    assert sorted(merged.task_ids) == sorted(one.task_ids)
    assert _canonical(merged) == _canonical(one)
    assert manifest["budget"]["env_steps"] == one.manifest["budget"]["env_steps"]


def test_shards_are_disjoint_and_a_foreign_shard_is_refused(tmp_path):
    s = _setup()
    parts = [shard_of(s["TASKS"], k, 3) for k in range(3)]
    assert sorted(t.task_id for p in parts for t in p) == sorted(t.task_id for t in s["TASKS"])
    with pytest.raises(ValueError, match="shard 3 of 3"):
        shard_of(s["TASKS"], 3, 3)
    prepare_shards(tmp_path / "a", s["runner"](), config=s["CONFIG"])
    prepare_shards(tmp_path / "b", s["runner"](), config=s["CONFIG"])
    _drivers(tmp_path / "b", 1, 2, "new")
    (tmp_path / "a" / SHARDS).mkdir()
    shard_folder(tmp_path / "b", 0, 1).rename(shard_folder(tmp_path / "a", 0, 1))
    with pytest.raises(ExportError, match="is a shard of run"):
        merge_shards(tmp_path / "a", s["runner"](), 1, config=s["CONFIG"])
