"""OpenRLHF 0.11.2's own code on a treegym run folder (``examples/openrlhf_step.py`` in its own
environment, ``.venv-trainers/openrlhf``): ``Experience`` in its multi-turn agent layout through
its replay-buffer steps, its logprob path on the embedded model lined up with the sampling
logprobs, and ``PolicyLoss`` against the run's columns, with gradients. What cannot run on a CPU
(``openrlhf.models``' package import: flash-attn) is asserted to be exactly that."""

from __future__ import annotations

import numpy as np
import pytest

from tests.trainer_envs import GROUP, collect_run, run_example, trainer_python
from treegym.harness import load_run


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    trainer_python("openrlhf")  # skip before collecting when OpenRLHF is not installed
    run = collect_run(tmp_path_factory.mktemp("openrlhf") / "run")
    return load_run(run), run_example("openrlhf", "openrlhf_step.py", str(run))


def test_experiences_hold_each_sample_in_openrlhfs_agent_layout(report):
    run, got = report
    s = run.samples.set_index("sample_id").loc[got["sample_id"]]
    assert len(s) == 2 * GROUP
    assert got["tokens"] == [list(p) + list(r) for p, r in zip(s.prompt_ids, s.response_ids,
                                                               strict=True)]  # fmt: skip
    assert got["actions"] == s.loss_mask.map(sum).tolist()  # observation tokens are no actions
    assert got["prompts"] == s.group_id.tolist() and got["rewards"] == s.reward.tolist()
    assert s.groupby("group_id").reward.nunique().max() > 1  # else the advantages are all 0
    assert got["advantage"] == pytest.approx(s.adv_tree_grpo.tolist(), abs=1e-6)
    assert got["advantage_off_mask_max"] == 0.0
    # OpenRLHF's logprob of each action token, from the model that sampled it: an action mask
    # or logprob column off by one token would differ by whole nats
    assert got["max_abs_logprob_diff"] < 1e-4


def test_policy_loss_on_the_run_columns_and_gradients_flow(report):
    run, got = report
    s = run.samples.set_index("sample_id").loc[got["sample_id"]]
    n, adv = s.loss_mask.map(sum).to_numpy(float), s.adv_tree_grpo.to_numpy(float)
    token_mean = -(adv * n).sum() / n.sum()  # PPO at ratio 1, token-level aggregation
    assert got["clip_ratio"] == 0.0 and abs(got["ppo_kl"]) < 1e-6
    assert got["loss"] == pytest.approx(token_mean, abs=1e-5)
    assert got["loss_is_corrected"] == pytest.approx(token_mean, abs=1e-4)  # IS weights ≈ 1
    assert np.isfinite(got["loss"]) and got["grad_norm"] > 0 and got["params_with_grad"] > 10
    assert got["policy_loss_module"] == "openrlhf.models.loss"


def test_what_does_not_import_on_a_cpu_is_flash_attn_and_nothing_else(report):
    _, got = report
    if got["openrlhf_models_import"] == "ok":
        pytest.skip("flash-attn is installed here: openrlhf.models imports as packaged")
    assert "flash_attn" in got["openrlhf_models_import"]
    assert got["flash_attn"].startswith("flash-attn==2.8.3 did not build")
