"""The benches that run the embedded model prompt it as it was trained: with its own
``template.json`` (a bench that built a default template showed the model commands it never
saw listed, and measured a different policy than ``treegym collect`` runs)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from treegym.policies.embedded import embedded_model_path
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
