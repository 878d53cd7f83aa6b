"""verl 0.9.1's own code on a treegym run folder (``examples/verl_step.py`` in verl's own
environment, ``.venv-trainers/verl``): its ``DataProto``, ``compute_grpo_outcome_advantage``
over ``uid`` (= treegym's ``adv_grpo``) and over ``uid`` + ``tree_uid`` (= ``adv_tree_grpo``),
``compute_policy_loss`` and ``agg_loss`` checked against the run's columns, and gradients of
the embedded model. The run is collected here, in treegym's environment."""

from __future__ import annotations

import numpy as np
import pytest

from tests.trainer_envs import GROUP, collect_run, run_example, trainer_python
from treegym.harness import load_run


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    trainer_python("verl")  # skip before collecting when verl is not installed
    run = collect_run(tmp_path_factory.mktemp("verl") / "run")
    return load_run(run), run_example("verl", "verl_step.py", str(run))


def test_verl_grpo_over_uid_and_tree_grpo_over_uid_and_tree_uid_are_treegyms(report):
    run, got = report
    samples = run.samples.set_index("sample_id").loc[got["sample_id"]]
    assert len(samples) == len(run.samples) == 2 * GROUP
    # mixed rewards in a task and within a tree, or these equalities say nothing
    assert samples.groupby("group_id").reward.nunique().max() > 1
    assert samples.groupby(["group_id", "tree_index"]).reward.nunique().max() > 1
    assert not np.allclose(samples.adv_grpo, samples.adv_tree_grpo)
    for name in ("grpo", "tree_grpo"):
        assert got[name]["value"] == pytest.approx(samples[f"adv_{name}"].tolist(), abs=1e-5)
        assert max(got[name]["off_mask_max"]) == 0.0  # observation tokens carry no advantage
    assert got["exported_tree_grpo"]["value"] == pytest.approx(got["tree_grpo"]["value"], abs=1e-5)


def test_verl_policy_loss_and_agg_loss_on_the_run_columns_and_gradients_flow(report):
    run, got = report
    s = run.samples.set_index("sample_id").loc[got["sample_id"]]
    n = s.loss_mask.map(sum).to_numpy(float)  # generated tokens per sample
    adv = s.adv_tree_grpo.to_numpy(float)
    assert got["trained_tokens"] == n.sum() < s.response_ids.map(len).sum()
    # the embedded model recomputes the sampling logprobs, so PPO's ratio is 1 and its loss is
    # the token-mean of -A: verl read the mask and the advantages where treegym wrote them
    assert got["max_abs_logprob_diff"] < 1e-4 and got["pg_clipfrac"] == 0.0
    assert got["loss"] == pytest.approx(-(adv * n).sum() / n.sum(), abs=1e-4)
    assert got["agg_loss"]["token-mean"] == pytest.approx(-(adv * n).sum() / n.sum(), abs=1e-5)
    assert got["agg_loss"]["seq-mean-token-mean"] == pytest.approx(-adv.mean(), abs=1e-5)
    assert got["agg_loss"]["seq-mean-token-sum"] == pytest.approx(-(adv * n).mean(), abs=1e-4)
    assert np.isfinite(got["loss"]) and got["grad_norm"] > 0 and got["params_with_grad"] > 10
