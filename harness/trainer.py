"""The policy update of ``treegym train``: a clipped policy-gradient step on a run folder.

The trainer keeps its own float32 copy of the model (the engine serving rollouts keeps
another), reads a round's samples **only through the public loader**
(:class:`~treegym.harness.loaders.TorchRunDataset`, as an external trainer would), and applies
:func:`~treegym.harness.objective.clipped_loss` with AdamW: ``epochs`` passes over the samples
in a seeded order, each split into ``mini_batches`` optimizer steps whose micro-batches
accumulate gradients. A checkpoint holds the weights (safetensors), the tokenizer, the
template settings, the optimizer state and the sampler RNG, so training resumes exactly.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .loaders import Run, TorchRunDataset, load_run
from .objective import LOSS_AGG_MODES, clipped_loss, step_normaliser, token_logprobs


class TrainError(RuntimeError):
    """A round cannot go on (bad input, a NaN loss, a checkpoint the engine refuses)."""


@dataclass(frozen=True)
class UpdateConfig:
    """Knobs of the update; defaults are the papers' and verl's where they agree."""

    advantage: str | None = None
    """Advantage estimator whose column to use; ``None``: the run's first estimator."""
    token_level: bool | None = None
    """Use the per-token column ``adv_<name>_tokens`` (default: for per-turn estimators)."""
    lr: float = 1e-6
    """AdamW learning rate (GRPO, Tree-GRPO and verl use 1e-6 for billion-parameter models)."""
    weight_decay: float = 0.01
    clip_low: float = 0.2
    clip_high: float = 0.2
    """PPO's epsilon (0.2); DAPO's clip-higher raises the upper one to 0.28."""
    loss_agg: str = "token-mean"
    kl_coef: float = 0.0
    """k3 KL to the initial policy (GRPO's paper: 0.04; verl, DAPO and Dr. GRPO: 0)."""
    epochs: int = 1
    mini_batches: int = 1
    """Optimizer steps per pass over a round's samples."""
    micro_batch: int = 8
    max_grad_norm: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss_agg not in LOSS_AGG_MODES:
            raise TrainError(f"unknown loss aggregation {self.loss_agg!r}; choose {LOSS_AGG_MODES}")
        for name in ("epochs", "mini_batches", "micro_batch"):
            if getattr(self, name) < 1:
                raise TrainError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and self.clip_low >= 0 and self.clip_high >= 0 and self.kl_coef >= 0):
            raise TrainError("lr must be > 0; clip_low, clip_high and kl_coef >= 0")


@dataclass
class UpdateStats:
    """What one round's update did (averaged over its micro-batches where it is a rate)."""

    loss: float = 0.0
    clip_fraction: float = 0.0
    kl: float = 0.0
    grad_norm: float = 0.0
    ratio_max_dev_first: float = 0.0
    """max |ratio − 1| of the first micro-batch before any step: the logprob-alignment check."""
    trained_tokens: int = 0
    samples: int = 0
    optimizer_steps: int = 0


class Trainer:
    """Model, reference model (when ``kl_coef > 0``), optimizer; updates from run folders."""

    def __init__(self, model_path: str | Path, update: UpdateConfig) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_path, self.config = Path(model_path), update
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.float32)
        self.model.train()
        self.ref = None
        if update.kl_coef > 0:
            self.ref = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.float32)
            self.ref.eval().requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=update.lr,
                                           weight_decay=update.weight_decay)  # fmt: skip

    # ------------------------------------------------------------------ data
    def dataset(self, run: Run) -> TorchRunDataset:
        """The run's samples, refused when they come from another tokenizer."""
        vocab = (run.manifest.get("tokenizer") or {}).get("vocab_size")
        if vocab is not None and int(vocab) != len(self.tokenizer):
            raise TrainError(
                f"{run.path} was sampled with a tokenizer of {vocab} tokens, the trained model "
                f"has {len(self.tokenizer)}: another model's data"
            )
        advantage = self.config.advantage or (run.estimators[0] if run.estimators else None)
        if advantage is None or advantage not in run.estimators:
            raise TrainError(
                f"{run.path} has no advantage column {advantage!r}; it has {run.estimators}"
            )
        return TorchRunDataset(run, advantage, token_level=self.config.token_level)

    # ------------------------------------------------------------------ update
    def update(self, run_path: str | Path, round_index: int) -> UpdateStats:
        run = load_run(run_path)
        ds = self.dataset(run)
        stats = UpdateStats(samples=len(ds))
        if not len(ds):
            return stats
        sampling = (run.manifest.get("config") or {}).get("sampling") or {}
        temperature = float(sampling.get("temperature", 1.0))
        rng = random.Random(f"{self.config.seed}:{round_index}")
        parts = []
        for epoch in range(self.config.epochs):
            order = list(range(len(ds)))
            rng.shuffle(order)
            for step_ids in _split(order, self.config.mini_batches):
                micro = [ds.collate([ds[i] for i in chunk])
                         for chunk in _chunks(step_ids, self.config.micro_batch)]  # fmt: skip
                parts.append(self._step(micro, temperature, first=epoch == 0 and not parts))
                stats.optimizer_steps += 1
        n = len(parts)
        stats.loss = sum(p["loss"] for p in parts) / n
        stats.clip_fraction = sum(p["clip_fraction"] for p in parts) / n
        stats.kl = sum(p["kl"] for p in parts) / n
        stats.grad_norm = sum(p["grad_norm"] for p in parts) / n
        stats.ratio_max_dev_first = parts[0]["ratio_max_dev_first"]
        stats.trained_tokens = sum(p["tokens"] for p in parts)
        return stats

    def _step(self, micro: list[dict[str, Any]], temperature: float, first: bool) -> dict:
        cfg = self.config
        norm = step_normaliser(micro, cfg.loss_agg)
        self.optimizer.zero_grad()
        out = dict.fromkeys(("loss", "clip_fraction", "kl", "ratio_max_dev_first"), 0.0)
        out["tokens"] = 0
        for k, batch in enumerate(micro):
            new = token_logprobs(self.model, batch, temperature)
            ref = None
            if self.ref is not None:
                with torch.no_grad():
                    ref = token_logprobs(self.ref, batch, temperature)
            part = clipped_loss(new, batch, clip_low=cfg.clip_low, clip_high=cfg.clip_high,
                                loss_agg=cfg.loss_agg, kl_coef=cfg.kl_coef, ref=ref,
                                normaliser=norm)  # fmt: skip
            if not torch.isfinite(part.loss):
                raise TrainError(f"NaN/inf loss on samples {batch['sample_ids']}: nothing saved")
            part.loss.backward()
            if first and k == 0:
                out["ratio_max_dev_first"] = part.ratio_max_dev
            out["loss"] += float(part.loss.detach())
            out["clip_fraction"] += part.clip_fraction * part.tokens
            out["kl"] += part.kl * part.tokens
            out["tokens"] += part.tokens
        grad = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        if not math.isfinite(float(grad)):
            raise TrainError("the gradient norm is not finite: nothing saved")
        self.optimizer.step()
        out["grad_norm"] = float(grad)
        out["clip_fraction"] /= max(1, out["tokens"])
        out["kl"] /= max(1, out["tokens"])
        return out

    # ------------------------------------------------------------------ checkpoints
    def save(self, folder: Path) -> Path:
        """Weights, tokenizer, template settings and optimizer state, written whole or not at
        all (a temporary folder renamed into place)."""
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp, safe_serialization=True)
        self.tokenizer.save_pretrained(tmp)
        template = self.model_path / "template.json"
        if template.is_file():
            shutil.copy(template, tmp / "template.json")
        torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "update_config.json").write_text(json.dumps(asdict(self.config), indent=2))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        return folder

    def load(self, folder: Path) -> None:
        """Continue from a checkpoint written by :meth:`save`."""
        from safetensors.torch import load_file

        state: dict[str, torch.Tensor] = {}
        for f in sorted(folder.glob("*.safetensors")):
            state.update(load_file(f))
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("lm_head.weight")]
        if missing or unexpected:
            raise TrainError(f"checkpoint {folder} does not fit the model: {missing or unexpected}")
        self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))


def _split(items: list[int], parts: int) -> list[list[int]]:
    size = math.ceil(len(items) / parts)
    return [items[i : i + size] for i in range(0, len(items), size)]


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
