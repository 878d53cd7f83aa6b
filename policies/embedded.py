"""The embedded default model: a tiny Llama shipped under ``data/embedded``.

No model hub is reachable where treegym is developed, so the project trains its own weak agent
(``scripts/train_embedded_model.py``, reproducible from a seed, CPU-only) on noisy-expert ReAct
transcripts of generated one-ingredient tw-cooking games, with a byte-level BPE tokenizer that
knows the ReAct template's special tokens. It is a standard ``LlamaForCausalLM``, so
transformers and SGLang both load it; ``training.json`` and ``eval.json`` beside the weights
record how it was made and how well it plays.
"""

from __future__ import annotations

import random
from importlib import resources
from pathlib import Path

#: The task family the embedded model was trained on (``{seed}`` is the game seed).
EMBEDDED_TASK_FAMILY = "tw-cooking:recipe=1,take=1,go={go},open={open},seed={seed}"
#: Game seeds the model trained on, and the held-out seeds used to evaluate it.
TRAIN_SEEDS = range(0, 10_000)
EVAL_SEEDS = range(10_000, 20_000)


def embedded_game_spec(seed: int) -> str:
    """The game spec of ``seed`` in the embedded model's family: one-ingredient tw-cooking
    games whose layout (one room or six, fridge open or closed) is drawn from the seed."""
    rng = random.Random(seed)
    go = rng.choice([1, 1, 6])
    opened = rng.choice(["true", "false"])
    return EMBEDDED_TASK_FAMILY.format(go=go, open=opened, seed=seed)


def embedded_model_path() -> Path:
    """Folder of the embedded model (config, safetensors weights, tokenizer)."""
    path = Path(str(resources.files("treegym.data") / "embedded"))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"the embedded model is missing at {path}; reinstall treegym or rebuild it with "
            "scripts/train_embedded_model.py"
        )
    return path
