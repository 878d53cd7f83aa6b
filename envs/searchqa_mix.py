"""SearchQA's share of the embedded model's task mix, ready for the trainer to call.

:mod:`.embedded_mix` maps seeds to tasks per env; this gives SearchQA's mapping in the same
terms (:class:`~.embedded_mix.EmbeddedTask`), with the same seed ranges: training seeds play the
default synthetic world's ``train`` questions, validation seeds its ``dev`` questions,
evaluation seeds its held-out ``test`` questions (about entities no training question starts
from). To join the mix, ``embedded_task(env, seed)`` dispatches ``env == "searchqa"`` here,
with ``ENVS["searchqa"] = ENV`` and ``MAX_EPISODE_STEPS["searchqa"] = MAX_EPISODE_STEPS``.
"""

from __future__ import annotations

from .embedded_mix import EVAL_SEEDS, TRAIN_SEEDS, VALID_SEEDS, EmbeddedTask
from .searchqa_questions import QUESTIONS_PER_SPLIT

ENV = "treegym/SearchQA-v0"
MAX_EPISODE_STEPS = 4
"""Tree-GRPO's multi-hop setting: three searches, then the answer turn."""
SPLIT_OF_SEEDS = (("train", TRAIN_SEEDS), ("dev", VALID_SEEDS), ("test", EVAL_SEEDS))


def searchqa_embedded_task(seed: int) -> EmbeddedTask:
    """The SearchQA task of ``seed``: a question id of the default world's matching split."""
    for split, seeds in SPLIT_OF_SEEDS:
        if seed in seeds:
            n = QUESTIONS_PER_SPLIT[split]
            return EmbeddedTask("searchqa", f"searchqa-{split}", f"{split}-{seed % n}", seed)
    raise ValueError(f"seed {seed} is in none of the mix's seed ranges (0..{EVAL_SEEDS.stop - 1})")
