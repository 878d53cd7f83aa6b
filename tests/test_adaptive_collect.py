"""The adaptive samplers from the front door: ``--gate selective`` around chain and tree_grpo,
``--sampler treepo`` and ``--sampler trace``, on ToyRooms (fast, scripted) and end to end on
TextWorld and ALFWorld tasks with the embedded model."""

from __future__ import annotations

import pytest

from tests.test_collect import TOY, _canonical, collect
from treegym.harness import load_run
from treegym.harness.selective import INFO_KEY


def _gate_records(run) -> dict[str, dict]:
    """Per task, the gate's record on tree 0's root (``nodes.parquet`` info column)."""
    import json

    roots = run.nodes[(run.nodes.parent_id.isna()) & (run.nodes.tree_index == 0)]
    return {r.task_id: json.loads(r.info)[INFO_KEY] for r in roots.itertuples()}


def test_gate_flag_is_the_selective_sampler_around_chain(tmp_path):
    """``--sampler chain --gate selective -g ...`` collects exactly what the nested
    ``--sampler selective -p inner=chain ...`` form does, and records the gate in the config."""
    gate = ["--sampler", "chain", "-p", "group_size=4", "--gate", "selective",
            "-g", "k=2", "-g", "d_l=0.5", "--n-tasks", "3"]  # fmt: skip
    res = collect(*TOY, *gate, "--out", str(tmp_path / "a"))
    assert res.exit_code == 0, res.stdout + res.stderr
    nested = ["--sampler", "selective", "-p", "inner=chain", "-p", "inner.group_size=4",
              "-p", "k=2", "-p", "d_l=0.5", "--n-tasks", "3"]  # fmt: skip
    assert collect(*TOY, *nested, "--out", str(tmp_path / "b")).exit_code == 0
    a, b = load_run(tmp_path / "a"), load_run(tmp_path / "b")
    assert _canonical(a) == _canonical(b)
    cfg = a.manifest["config"]["collect"]
    assert cfg["gate"] == "selective" and cfg["gate_params"] == {"k": 2, "d_l": 0.5}
    assert a.manifest["sampler"]["inner"]["name"] == "chain"
    assert "gated groups" in res.stdout


def test_gated_groups_stay_in_nodes_and_never_reach_samples(tmp_path):
    # epsilon 0: the expert's four chains take the same actions (d_K = 0 < d_L) -> gated;
    # epsilon 1: random actions diverge (d_K large) -> the group trains.
    for eps, name in ((0.0, "converged"), (1.0, "divergent")):
        args = [a if a != "scripted:expert:0.5" else f"scripted:expert:{eps}" for a in TOY]
        res = collect(*args, "--sampler", "tree_grpo", "-p", "m=4", "--gate", "selective",
                      "-g", "k=3", "-g", "d_l=0.3", "--n-tasks", "2",
                      "--out", str(tmp_path / name))  # fmt: skip
        assert res.exit_code == 0, res.stdout + res.stderr
    converged, divergent = load_run(tmp_path / "converged"), load_run(tmp_path / "divergent")
    assert all(r["gated"] and r["d_k"] == 0 for r in _gate_records(converged).values())
    assert len(converged.samples) == 0
    assert set(converged.nodes.ended.dropna()) == {"gated"}
    assert not any(r["gated"] for r in _gate_records(divergent).values())
    assert all(r["d_k"] >= 0.3 for r in _gate_records(divergent).values())
    assert len(divergent.samples) == 2 * 4 * 3  # M=4 trees x K=3 leaves per task


GATE = ["--gate", "selective", "-g", "k=3", "-g", "d_l=0.12"]
ADAPTIVE = {
    "treepo": (["--sampler", "treepo", "-p", "segment_len=8", "-p", "max_width=4"], 4),
    "trace": (["--sampler", "trace", "-p", "roots=2", "-p", "continuations=2"], 4),
    "chain+selective": (["--sampler", "chain", "-p", "group_size=4", *GATE], 4),
}


@pytest.mark.slow
@pytest.mark.parametrize("env", ["textworld", "alfworld"])
@pytest.mark.parametrize("sampler", list(ADAPTIVE))
def test_adaptive_samplers_end_to_end_with_the_embedded_model(env, sampler, tmp_path):
    """The issue's "done when": each adaptive sampler collects a run folder on TextWorld and
    ALFWorld tasks with the embedded model, through ``treegym collect`` and env workers."""
    source = (["--n-tasks", "1", "-k", "max_episode_steps=4"] if env == "textworld" else
              ["--env", "treegym/ALFWorld-v0", "--tasks", "look_at_obj_in_light:seed={seed}",
               "--n-tasks", "1", "-k", "max_episode_steps=4"])  # fmt: skip
    args, leaves = ADAPTIVE[sampler]
    out = tmp_path / "run"
    res = collect(*source, *args, "--workers", "1", "--quiet", "--out", str(out))
    assert res.exit_code == 0, res.stdout + res.stderr
    run = load_run(out)
    assert run.complete and len(run.task_ids) == 1
    assert run.manifest["policy"]["policy"] == "hf"
    assert run.manifest["sampler"]["name"] == sampler.split("+")[-1]
    trained = run.nodes[run.nodes.training]
    assert len(run.samples) == len(trained) <= leaves
    if sampler == "chain+selective":
        record = _gate_records(run)[run.task_ids[0]]
        assert record["gated"] == (len(run.samples) == 0)
    else:
        assert len(run.samples) == leaves
    for row in run.samples.itertuples():
        assert len(row.response_ids) == len(row.loss_mask) == len(row.logprobs)
        assert sum(row.loss_mask) > 0
    if sampler == "treepo":
        assert "adv_treepo" in run.samples.columns
        # segments of 8 tokens: some nodes end inside a turn and do not step the env
        partial = run.nodes[(run.nodes.parent_id.notna()) & (run.nodes.env_steps == 0)]
        assert len(partial) > 0 and (partial.action.fillna("") == "").all()
