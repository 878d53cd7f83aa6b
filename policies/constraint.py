"""Constrained choice in HFPolicy's engine, and the same mask for trainers.

A :class:`~treegym.policies.protocol.ChoiceConstraint` lists the token sequences a turn may
still write (each admissible command's ids, then the end-of-turn token). :class:`ChoiceCursor`
walks a token trie of them (after a free first line, when the constraint has one): at each
step only the children of the current trie node are allowed, every other logit is set to
``-inf`` before sampling (:func:`mask_logits`), and the turn is complete when a leaf is
reached. So the engine samples exactly the distribution
"the model, renormalised over what can still spell an admissible command", and the logprob it
reports for a token is under that masked, temperature-scaled distribution.

Recomputing it (a trainer's importance ratio, a test): the mask is a function of the turn's
admissible commands (the parent node's ``info["admissible_commands"]`` in ``nodes.parquet``)
and the tokenizer, through the run's template (``Template.constraint``); given a model's logits
at the turn's positions, :func:`masked_logprobs` gives the logprobs the engine reported.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .protocol import ChoiceConstraint

_Trie = dict[int, "_Trie"]


def build_trie(choices: Sequence[Sequence[int]]) -> _Trie:
    """Nested dicts ``token -> subtrie``; a choice ends where its subtrie is empty."""
    root: _Trie = {}
    for choice in choices:
        node = root
        for token in choice:
            node = node.setdefault(int(token), {})
    return root


class ChoiceCursor:
    """Where a constrained request is in its trie (or in its free first line, before it)."""

    def __init__(self, constraint: ChoiceConstraint) -> None:
        self.trie = build_trie(constraint.choices)
        self.line_break = constraint.free_line_break
        self.banned = list(constraint.free_line_banned)
        self.node: _Trie | None = self.trie if self.line_break is None else None

    @property
    def in_free_line(self) -> bool:
        return self.node is None

    def allowed(self) -> list[int]:
        """The tokens allowed next (in the free line: see :attr:`banned` instead)."""
        return [] if self.node is None else list(self.node)

    @property
    def complete(self) -> bool:
        """The turn spelled a whole choice (nothing more may follow)."""
        return self.node is not None and not self.node

    def advance(self, token: int) -> None:
        if self.node is None:
            if token == self.line_break:
                self.node = self.trie
            elif token in self.banned:
                raise ValueError(f"token {token} is not allowed in the constraint's free line")
            return
        if token not in self.node:
            raise ValueError(f"token {token} is not allowed by the choice constraint here")
        self.node = self.node[token]


def mask_logits(logits: torch.Tensor, cursors: Sequence[ChoiceCursor | None]) -> torch.Tensor:
    """``[batch, vocab]`` logits with every token a row's cursor forbids set to ``-inf``
    (rows without a cursor unchanged; the input is not modified)."""
    rows = [b for b, c in enumerate(cursors) if c is not None]
    if not rows:
        return logits
    keep = torch.ones(logits.shape, dtype=torch.bool, device=logits.device)
    for b in rows:
        cursor = cursors[b]
        if cursor.in_free_line:  # type: ignore[union-attr]
            keep[b, cursor.banned] = False  # type: ignore[union-attr]
        else:
            keep[b] = False
            keep[b, cursor.allowed()] = True  # type: ignore[union-attr]
    return logits.masked_fill(~keep, float("-inf"))


def masked_logprobs(
    logits: torch.Tensor,
    generated: Sequence[int],
    constraint: ChoiceConstraint,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Logprobs of ``generated`` under the masked distribution the engine sampled from.

    ``logits[t]`` are the model's logits that predicted ``generated[t]`` (``[len, vocab]``);
    ``temperature`` as sampled (below 1e-6: greedy, logprobs of the untempered distribution).
    """
    cursor = ChoiceCursor(constraint)
    scale = 1.0 if temperature < 1e-6 else temperature
    out = []
    for t, token in enumerate(generated):
        row = mask_logits(logits[t : t + 1].float(), [cursor])[0]
        out.append(torch.log_softmax(row / scale, dim=-1)[token])
        cursor.advance(int(token))
    return torch.stack(out)
