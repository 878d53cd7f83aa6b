"""The benches measure the shipped embedded model as ``treegym collect`` runs it: prompted with
its own ``template.json`` (a bench that built a default template showed the model commands it
never saw listed), and never from repetitions another model measured."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from treegym.policies.embedded import embedded_model_path
from treegym.policies.hf import model_digest
from treegym.policies.react import TEMPLATE_FILE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import harness_overhead
import sampler_comparison


class Captured(Exception):
    """Raised by the stand-in Runner with the template it was given."""


class CapturingRunner:
    def __init__(self, *, template, **_):
        raise Captured(template)


def _trained_settings() -> dict:
    return json.loads((embedded_model_path() / TEMPLATE_FILE).read_text())


def _captured(monkeypatch, module, call):
    monkeypatch.setattr(module, "Runner", CapturingRunner)
    with pytest.raises(Captured) as caught:
        asyncio.run(call())
    return caught.value.args[0]


def test_sampler_comparison_prompts_the_model_with_its_trained_template(monkeypatch):
    env = sampler_comparison.ENVS[0]
    template = _captured(monkeypatch, sampler_comparison, lambda: sampler_comparison.run_arm(
        env, [], sampler_comparison.arms()["chain G=6"](), seed=0, max_steps=2))  # fmt: skip
    settings = _trained_settings()
    assert settings["hide_admissible"] and template.hide_admissible == settings["hide_admissible"]


def test_harness_overhead_model_run_prompts_the_model_with_its_trained_template(monkeypatch):
    template = _captured(monkeypatch, harness_overhead,
                         lambda: harness_overhead.model_run(1, None, pool=None))  # fmt: skip
    assert template.hide_admissible == _trained_settings()["hide_admissible"]


def test_sampler_repetitions_of_another_model_are_not_reused(monkeypatch, tmp_path):
    monkeypatch.setattr(sampler_comparison, "RESULTS", tmp_path)
    monkeypatch.setattr(sampler_comparison, "SAVED_ONLY", True)  # load, never measure
    env, cfg = sampler_comparison.ENVS[0], sampler_comparison.SIZES["smoke"]
    chain = {"budget": {}, "wall_s": 1.0, "mixed": {"t": True}, "gated": {"t": False}}
    folder = sampler_comparison.results_dir("smoke")
    folder.mkdir(parents=True)
    for digest, expected in (("0" * 16, 0), (model_digest(embedded_model_path()), 1)):
        config = {**cfg, "arms": list(sampler_comparison.arms()), "model_sha256": digest}
        doc = {"config": config, "arms": {name: chain for name in config["arms"]}}
        for rep in range(cfg["repeats"]):
            (folder / f"{env.slug}-rep{rep}.json").write_text(json.dumps(doc))
        assert len(sampler_comparison.measure_env(env, "smoke")) == expected * cfg["repeats"]
