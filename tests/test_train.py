"""``treegym train``'s loop (``treegym.harness.train``) on ToyRooms with a tiny model: rounds
update the weights the engine serves, metrics are counted, resume repeats an uninterrupted
run, and bad input or a broken round is one clear error."""

from __future__ import annotations

import asyncio
import itertools
import shutil

import pandas as pd
import pytest
import torch

from tests.policy_fixtures import tiny_model  # noqa: F401 - fixture
from tests.test_export_grpo import GuidedHFPolicy
from treegym.harness import ChainSampler, InProcessExecutor, Runner, Task, load_run
from treegym.harness.evaluate import evaluate
from treegym.harness.train import TrainPlan, train
from treegym.harness.trainer import TrainError, UpdateConfig
from treegym.policies import ReActTemplate, SamplingParams

ENV = "treegym/ToyRooms-v0"
TIMING = ["collect_s", "update_s"]


def _plan(model, out, rounds=3, **update) -> TrainPlan:
    # batch 1: a request's tokens cannot depend on what else is in flight, so two runs (and a
    # resumed one) sample exactly the same trajectories
    policy = GuidedHFPolicy(model, max_batch=1)
    template = ReActTemplate(policy.tokenizer)
    sampling = SamplingParams(max_new_tokens=16, temperature=1.0)

    def make_runner(r: int) -> Runner:
        return Runner(policy=policy, template=template, sampler=ChainSampler(group_size=4),
                      executor=InProcessExecutor(ENV, {"max_episode_steps": 8}),
                      sampling=sampling, context_length=1024, seed=100 + r)  # fmt: skip

    def round_tasks(r: int) -> list[Task]:
        return [Task(f"toy-{r}-{i}", {"task": 10 * r + i}, seed=i) for i in range(3)]

    async def held_out() -> dict[str, float]:
        tasks = [(Task(f"eval-{i}", {"task": 1000 + i}, seed=i), "toy") for i in range(2)]
        ex = InProcessExecutor(ENV, {"max_episode_steps": 8})
        report = await evaluate(policy, template, ex, tasks, episodes=2, max_new_tokens=16,
                                context_length=1024)  # fmt: skip
        await ex.close()
        return {"eval_t1_success": report.summary()["success_rate"]}

    update = {"lr": 1e-3, "micro_batch": 4, **update}
    return TrainPlan(out=out, rounds=rounds, initial_model=model, policy=policy,
                     make_runner=make_runner, round_tasks=round_tasks,
                     update=UpdateConfig(**update), evaluate=held_out, eval_every=2,
                     config={"test": True, **update}, progress=lambda _: None)  # fmt: skip


def _learning(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows).drop(columns=TIMING, errors="ignore")


def test_rounds_train_the_served_weights_and_count_everything(tiny_model, tmp_path):  # noqa: F811
    plan = _plan(tiny_model, tmp_path / "train")
    rows = asyncio.run(train(plan))
    assert [r["round"] for r in rows] == [-1, 0, 1, 2]
    assert [r["policy_version"] for r in rows] == ["0", "0", "1", "2"]
    assert (
        "eval_t1_success" in rows[0]
        and "eval_t1_success" in rows[2]
        and "eval_t1_success" in rows[3]
    )
    assert "eval_t1_success" not in rows[1]  # eval every 2 rounds, and after the last
    for prev, row in itertools.pairwise(rows):
        assert row["cum_engine_tokens"] == prev["cum_engine_tokens"] + row["engine_tokens"]
        assert row["engine_tokens"] > row["generated_tokens"] > 0
    for row in rows[1:]:
        # the exported logprobs are what the trained model computes before its step
        assert row["ratio_max_dev_first"] < 1e-3
        assert row["optimizer_steps"] == 1 and row["samples"] == 12
        # GRPO learns only from mixed groups: no mixed group, no gradient
        assert (row["grad_norm"] > 0) == (row["mixed_group_share"] > 0)
    assert any(row["mixed_group_share"] > 0 for row in rows[1:])
    on_disk = pd.read_parquet(tmp_path / "train" / "metrics.parquet")
    assert list(on_disk["round"]) == [-1, 0, 1, 2]
    # each round's samples carry the version that generated them; the engine serves the update
    for r in range(3):
        run = load_run(tmp_path / "train" / f"round-{r:03d}")
        assert set(run.samples["policy_version"]) == {str(r)}
    assert plan.policy.engine.weight_version == "3"
    start = torch.nn.utils.parameters_to_vector(type(plan.policy)(tiny_model).model.parameters())
    now = torch.nn.utils.parameters_to_vector(plan.policy.model.parameters())
    assert (start - now).abs().max() > 1e-4


def test_resume_after_a_failed_update_ends_like_an_uninterrupted_run(tiny_model, tmp_path,  # noqa: F811
                                                                     monkeypatch):  # fmt: skip
    straight = asyncio.run(train(_plan(tiny_model, tmp_path / "a")))
    from treegym.harness import trainer as trainer_mod

    real = trainer_mod.Trainer.update

    def dies_in_round_1(self, run_path, r):
        if r == 1:
            raise KeyboardInterrupt  # the process stops inside the update
        return real(self, run_path, r)

    monkeypatch.setattr(trainer_mod.Trainer, "update", dies_in_round_1)
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(train(_plan(tiny_model, tmp_path / "b")))
    assert not (tmp_path / "b" / "checkpoints" / "round-001").exists()
    monkeypatch.setattr(trainer_mod.Trainer, "update", real)
    resumed = asyncio.run(train(_plan(tiny_model, tmp_path / "b"), resume=True))
    # same tokens, rewards and losses; the engine-vs-trainer logprob gap (ratio_max_dev_first,
    # ~1e-6) is float noise that depends on how the engine happened to batch the requests
    pd.testing.assert_frame_equal(_learning(straight), _learning(resumed), atol=1e-5)
    with pytest.raises(TrainError, match="is not empty: pass --resume"):
        asyncio.run(train(_plan(tiny_model, tmp_path / "b")))
    with pytest.raises(TrainError, match="started with another configuration"):
        asyncio.run(train(_plan(tiny_model, tmp_path / "b", lr=2e-3), resume=True))


def test_bad_input_and_broken_rounds_are_one_line_errors(tiny_model, tmp_path):  # noqa: F811
    with pytest.raises(
        TrainError, match=r"no advantage column 'nope'; it has \['grpo', 'node_value'\]"
    ):
        asyncio.run(train(_plan(tiny_model, tmp_path / "a", rounds=1, advantage="nope")))
    with pytest.raises(TrainError, match="unknown loss aggregation"):
        UpdateConfig(loss_agg="mean")
    with pytest.raises(TrainError, match="clip_low, clip_high and kl_coef >= 0"):
        UpdateConfig(clip_low=float("nan"))
    from treegym.harness import trainer as trainer_mod

    real_logprobs = trainer_mod.token_logprobs
    trainer_mod.token_logprobs = lambda *a: real_logprobs(*a) * float("nan")
    try:
        with pytest.raises(TrainError, match=r"NaN/inf loss on samples \['toy-0-"):
            asyncio.run(train(_plan(tiny_model, tmp_path / "b", rounds=1)))
    finally:
        trainer_mod.token_logprobs = real_logprobs
    assert not (tmp_path / "b" / "checkpoints" / "round-000").exists()
    # a checkpoint the engine refuses: the round fails, the old weights keep serving
    plan = _plan(tiny_model, tmp_path / "c", rounds=1)

    real_save = trainer_mod.Trainer.save

    def broken_save(self, folder):
        path = real_save(self, folder)
        for f in path.glob("*.safetensors"):
            f.write_bytes(b"not weights")
        return path

    trainer_mod.Trainer.save = broken_save
    try:
        with pytest.raises(TrainError, match=r"the engine refused .*round-000.*cannot read"):
            asyncio.run(train(plan))
    finally:
        trainer_mod.Trainer.save = real_save
    assert plan.policy.engine.weight_version == "0"
    shutil.rmtree(tmp_path / "c")


def test_train_command_and_its_learning_curves(tiny_model, tmp_path):  # noqa: F811
    from typer.testing import CliRunner

    from treegym.cli import app

    out = tmp_path / "t"
    args = ["train", "--env", ENV, "--tasks", "toy-{seed}", "--policy", f"hf:{tiny_model}",
            "--sampler", "chain", "-p", "group_size=2",
            "--n-tasks", "2", "--eval-tasks", "0", "--lr", "1e-3", "--workers", "0",
            "-k", "max_episode_steps=3", "--out", str(out)]  # fmt: skip
    cli = CliRunner()
    res = cli.invoke(app, [*args, "--rounds", "1"])
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "trained 1 rounds" in res.stdout
    res = cli.invoke(app, [*args, "--rounds", "1"])
    assert res.exit_code == 2 and "pass --resume" in res.stderr
    res = cli.invoke(app, [*args, "--rounds", "2", "--resume"])
    assert res.exit_code == 2 and "another configuration" in res.stderr  # rounds changed
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert list(metrics["round"]) == [0]
    assert set(load_run(out / "round-000").samples["policy_version"]) == {"0"}
    res = cli.invoke(app, ["show", str(out)])
    assert res.exit_code == 0, res.stdout + res.stderr
    page = (out / "report.html").read_text()
    assert "mixed-reward groups (train)" in page and page.count("<polyline") == 2
    for bad, message in [(["--loss-agg", "mean"], "unknown loss aggregation 'mean'"),
                         (["--advantage", "nope"], "no advantage column 'nope'"),
                         (["--action-format", "json"], "unknown action format 'json'"),
                         (["--template", "jinja"], "unknown template 'jinja'")]:  # fmt: skip
        res = cli.invoke(app, [*args[:-1], str(tmp_path / bad[1]), *bad])
        assert res.exit_code == 2 and message in res.stderr, res.stderr
        assert "Traceback" not in res.stderr
