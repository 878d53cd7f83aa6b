"""TRL 1.16's own ``GRPOTrainer.train()`` on treegym data, with the embedded model: online (the
``rollout_func`` grows Tree-GRPO trees with the runner and the weights being trained) and
offline (a run folder as a ``datasets.Dataset``, replayed). TRL's logged loss is checked against
the loss worked out from treegym's own advantages and loss masks: at ratio 1 (one step per
generation) ``loss_type="bnpo"`` is ``-Σ A_i n_i / Σ n_i`` over the n_i generated tokens, so an
advantage TRL did not take from treegym, or an observation token it did not leave out of the
loss, changes the number."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest
import torch

from tests.trainer_envs import GROUP, SETUP, TASKS, collect_run, make_runner, status
from treegym.harness import load_run
from treegym.harness.export import samples_table
from treegym.policies import embedded_model_path

try:
    import trl
    from trl import GRPOConfig, GRPOTrainer
except ImportError:
    pytest.skip(f"trl is not installed ({status('trl')}; {SETUP} trl)", allow_module_level=True)

from treegym.integrations.trl import (
    TESTED_VERSION,
    ReplayRollout,
    TreegymRollout,
    env_reward,
    prompts_dataset,
    treegym_advantage,
    trl_dataset,
)

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func's experimental warning


def _trainer(tmp_path, rollout, prompts, reward=treegym_advantage, group=GROUP, **config):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, tasks = embedded_model_path(), prompts_dataset(prompts)
    args = GRPOConfig(output_dir=str(tmp_path / "trl"), use_cpu=True, report_to="none",
                      save_strategy="no", logging_steps=1, max_steps=1, learning_rate=1e-3,
                      per_device_train_batch_size=len(tasks) * group, num_generations=group,
                      loss_type="bnpo", **{"scale_rewards": "none", **config})  # fmt: skip
    return GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
                       reward_funcs=reward, args=args, train_dataset=tasks,
                       processing_class=AutoTokenizer.from_pretrained(path),
                       rollout_func=rollout)  # fmt: skip


def _bnpo_loss(advantages, loss_masks) -> float:
    n = np.array([sum(m) for m in loss_masks], float)
    return float(-(np.asarray(advantages, float) * n).sum() / n.sum())


def _samples(rollout):
    """The samples rows of the rollout's last task results, as a run folder would hold them."""
    estimators = list(rollout.runner.sampler.estimators)
    tables = [samples_table(r, "trl", estimators) for r in rollout.results]
    return pa.concat_tables(tables).to_pandas()


def _mixed(samples) -> None:
    """Rewards differ within a task, so the advantages (and the loss) are not all zero."""
    assert samples.groupby("group_id").reward.nunique().max() > 1


def test_tested_version_is_installed():
    assert trl.__version__ == TESTED_VERSION


def test_online_rollouts_train_a_step_and_treegyms_advantages_reach_trls_loss(tmp_path):
    runner = make_runner()
    rollout = TreegymRollout(runner, TASKS, advantage="tree_grpo")
    trainer = _trainer(tmp_path, rollout, [t.task_id for t in TASKS])
    trainer.train()
    samples = _samples(rollout)
    _mixed(samples)
    log = trainer.state.log_history[0]
    assert log["loss"] == pytest.approx(_bnpo_loss(samples.adv_tree_grpo, samples.loss_mask),
                                        abs=1e-5)  # fmt: skip
    # TRL counts only the model's tokens (env_mask): fewer than the completions hold
    generated = samples.loss_mask.map(sum)
    assert log["completions/mean_length"] == pytest.approx(generated.mean())
    assert generated.sum() < samples.response_ids.map(len).sum()
    assert log["grad_norm"] > 0
    versions = {n.policy_version for r in rollout.results for t in r.trees for n in t.nodes[1:]}
    assert versions == {"trl-step-0"}  # the step's rollouts came from the weights it trained

    # the next rollouts load the weights the step produced into the runner's policy
    prompts = [t.task_id for t in TASKS for _ in range(GROUP)]
    rollout(prompts, trainer)
    versions = {n.policy_version for r in rollout.results for t in r.trees for n in t.nodes[1:]}
    assert versions == {"trl-step-1"}
    trained, served = trainer.model.state_dict(), runner.policy.model.state_dict()
    assert all(torch.equal(trained[k], served[k]) for k in served)
    rollout.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return load_run(collect_run(tmp_path_factory.mktemp("trl") / "run"))


def test_a_run_folder_is_a_trl_dataset_of_its_samples(run):
    ds = trl_dataset(run, advantage="tree_grpo")
    s = run.samples
    assert len(ds) == len(s) == len(TASKS) * GROUP
    assert ds["prompt"] == s.group_id.tolist()
    assert ds["prompt_ids"] == s.prompt_ids.map(list).tolist()
    assert ds["completion_ids"] == s.response_ids.map(list).tolist()
    assert ds["env_mask"] == s.loss_mask.map(list).tolist()
    assert ds["logprobs"] == s.logprobs.map(list).tolist()
    assert ds["env_reward"] == s.reward.tolist()
    assert ds["treegym_advantage"] == s.adv_tree_grpo.tolist()
    with pytest.raises(ValueError, match="no 'nope' advantages; they have"):
        trl_dataset(run, advantage="nope")


def test_offline_replay_trains_a_step_on_the_runs_own_advantages(run, tmp_path):
    _mixed(run.samples)
    ds = trl_dataset(run, advantage="tree_grpo")
    trainer = _trainer(tmp_path, ReplayRollout(ds), ds["prompt"])
    trainer.train()
    log = trainer.state.log_history[0]
    want = _bnpo_loss(run.samples.adv_tree_grpo, run.samples.loss_mask)
    assert log["loss"] == pytest.approx(want, abs=1e-5) and log["grad_norm"] > 0


def test_trls_own_grpo_on_the_env_reward_is_treegyms_grpo_up_to_its_epsilon(run, tmp_path):
    ds = trl_dataset(run, advantage="grpo")
    trainer = _trainer(tmp_path, ReplayRollout(ds), ds["prompt"], reward=env_reward,
                       scale_rewards="group")  # fmt: skip
    trainer.train()
    want = _bnpo_loss(run.samples.adv_grpo, run.samples.loss_mask)
    assert trainer.state.log_history[0]["loss"] == pytest.approx(want, rel=1e-3)
    tree = _bnpo_loss(run.samples.adv_tree_grpo, run.samples.loss_mask)
    assert abs(tree - want) > 1e-2  # the two estimators differ on this run


def test_a_group_size_unlike_the_tasks_training_leaves_is_one_clear_error(run, tmp_path):
    ds = trl_dataset(run)
    trainer = _trainer(tmp_path, ReplayRollout(ds), ds["prompt"], group=GROUP // 2)
    with pytest.raises(ValueError, match=rf"has {GROUP} training samples but GRPOConfig\."
                                         rf"num_generations is {GROUP // 2}"):  # fmt: skip
        trainer.train()
    trainer = _trainer(tmp_path, ReplayRollout(ds), ["not-a-task"])
    with pytest.raises(ValueError, match="prompt 'not-a-task' is not a task of the replayed"):
        trainer.train()
