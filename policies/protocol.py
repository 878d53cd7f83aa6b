"""The policy protocol: token ids in, token ids (with logprobs) out, async and batched.

One dataclass per message, every field documented, after SGLang's
``python/sglang/srt/managers/io_struct.py`` (``GenerateReqInput``) and
``python/sglang/srt/sampling/sampling_params.py`` (``SamplingParams``), so a request maps onto
SGLang's native ``POST /generate`` without renaming anything that matters.

Why token ids end to end: the ReAct transcript is built from the exact ids the policy produced
plus observation ids tokenized once. Decoding a turn and re-encoding it can yield different ids
(BPE merges across the boundary), which silently breaks the logprob/loss-mask alignment a
trainer relies on.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

GRAMMAR_KEYS = ("regex", "ebnf", "json_schema", "structural_tag")
"""SGLang ``sampling_params`` keys that constrain decoding (``sampling/sampling_params.py``)."""


class PolicyError(RuntimeError):
    """A policy could not produce a result (server unreachable, malformed answer, …)."""


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one continuation (names and defaults as SGLang's ``SamplingParams``)."""

    max_new_tokens: int = 128
    """Upper bound of generated tokens; the result's ``finish_reason`` is ``"length"`` then."""
    temperature: float = 1.0
    """Softmax temperature; below 1e-6 means greedy (SGLang's convention)."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    top_k: int = -1
    """Keep the k most likely tokens; -1 disables."""
    stop_token_ids: tuple[int, ...] = ()
    """Token ids that end the generation (the stop token is part of ``output_ids``)."""
    seed: int | None = None
    """Per-request sampling seed (SGLang: ``sampling_seed``); ``None`` draws one."""
    ignore_eos: bool = False
    """Keep generating past the model's EOS token (SGLang and vLLM: ``ignore_eos``); stop
    tokens still stop. Benchmarks use it to generate exactly ``max_new_tokens``."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature < 1e-6

    def to_sglang(self) -> dict[str, Any]:
        """The ``sampling_params`` dict of SGLang's ``/generate``."""
        out: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "stop_token_ids": list(self.stop_token_ids),
            "skip_special_tokens": False,
            "no_stop_trim": True,
        }
        if self.seed is not None:
            out["sampling_seed"] = self.seed
        if self.ignore_eos:
            out["ignore_eos"] = True
        return out

    @classmethod
    def from_sglang(cls, params: Mapping[str, Any]) -> SamplingParams:
        """Parse a ``sampling_params`` dict (unknown SGLang keys are accepted and ignored,
        except SGLang's constrained-decoding keys: ignoring those would sample unconstrained)."""
        grammar = [k for k in GRAMMAR_KEYS if params.get(k) is not None]
        if grammar:
            raise ValueError(
                f"sampling_params {grammar[0]!r} (constrained decoding) is not supported by "
                "treegym's engine over HTTP; run the model in-process (--policy hf:PATH), "
                "which constrains through GenerateRequest.constraint"
            )
        return cls(
            max_new_tokens=int(params.get("max_new_tokens", 128)),
            temperature=float(params.get("temperature", 1.0)),
            top_p=float(params.get("top_p", 1.0)),
            top_k=int(params.get("top_k", -1)),
            stop_token_ids=tuple(int(t) for t in params.get("stop_token_ids") or ()),
            seed=params.get("sampling_seed"),
            ignore_eos=bool(params.get("ignore_eos", False)),
        )


@dataclass(frozen=True)
class ChoiceConstraint:
    """Constrained choice: the continuation must be exactly one of ``choices``.

    Built by the template from the env's admissible commands (``Template.constraint``), never
    from anything else the model cannot see. Each choice is the rest of one command's turn as
    the tokenizer writes it in the chat (the command's canonical ids, then the end-of-turn
    token), after the ``done`` ids a cut turn already holds (a TreePO segment continues them).

    Engines: ``HFPolicy`` masks the logits with a token trie of ``choices`` (so the ids are the
    canonical ones); SGLang (``sampling_params.ebnf``) and vLLM (``structured_outputs.choice``)
    constrain the *text* to ``texts``, any tokenization that spells it, ended by their EOS.
    Logprobs are under the masked distribution each engine sampled from (disallowed tokens
    removed, then temperature-scaled softmax): :func:`treegym.policies.constraint.masked_logprobs`
    recomputes HFPolicy's from a model's logits and these choices.

    With ``free_line_break`` set (``--action-format react-choice``) the turn first writes one
    free line (a thought): any tokens but ``free_line_banned`` (the end token and every token
    holding a line break), ended by the ``free_line_break`` token; the choices follow it
    (``Action: <command>`` and the end token). SGLang and vLLM get the same as text:
    ``[^\n]*`` then a line break then one of ``texts``.
    """

    choices: tuple[tuple[int, ...], ...]
    """Token ids of each allowed continuation, each ending with the end-of-turn token."""
    texts: tuple[str, ...]
    """The same continuations as text, without the end token (for text-level constraints)."""
    free_line_break: int | None = None
    """The line-break token that ends a free first line (``None``: no free line)."""
    free_line_banned: tuple[int, ...] = ()
    """Tokens the free line may not use (sorted; the end token and other line breaks)."""

    def __post_init__(self) -> None:
        if not self.choices or len(self.choices) != len(self.texts):
            raise ValueError(
                f"a choice constraint needs choices and one text per choice, got "
                f"{len(self.choices)} choices and {len(self.texts)} texts"
            )
        if any(not c for c in self.choices):
            raise ValueError("a choice constraint has an empty choice")


@dataclass(frozen=True)
class GenerateRequest:
    """One prompt to continue."""

    input_ids: tuple[int, ...]
    """The whole prompt as token ids (SGLang: ``input_ids``)."""
    sampling: SamplingParams = field(default_factory=SamplingParams)
    """How to sample (SGLang: ``sampling_params``)."""
    rid: str | None = None
    """Request id, echoed in the result (SGLang: ``rid``)."""
    hints: Mapping[str, Any] | None = None
    """Side information for scripted policies (admissible commands, expert plan). Never sent
    to a model server; models must act from ``input_ids`` alone."""
    constraint: ChoiceConstraint | None = None
    """Constrained decoding (``--action-format choice``): the only continuations allowed.
    The one way anything of ``hints`` reaches an engine, and only as this explicit mask."""


@dataclass(frozen=True)
class GenerateResult:
    """One continuation, with what the engine knows about its cost."""

    output_ids: tuple[int, ...]
    """Generated token ids, including the stop token when one matched."""
    logprobs: tuple[float, ...]
    """Log-probability of each generated id under the sampling distribution (temperature
    applied, before top-p/top-k truncation; under a ``constraint``, the masked distribution);
    one per id (SGLang: ``output_token_logprobs``).
    NaN where the server sent none (SGLang and vLLM write a non-finite logprob as ``null``):
    the token was generated but its logprob is unknown, so a trainer must not use it —
    ``treegym train`` stops the round on the NaN loss it gives (nothing is saved); other
    trainers should mask such tokens (:func:`logprob_or_nan`)."""
    finish_reason: str
    """``"stop"`` (stop token matched), ``"length"`` (``max_new_tokens`` reached) or ``"abort"``."""
    prompt_tokens: int
    """Prompt length as the engine counted it."""
    cached_tokens: int
    """Prompt tokens served from the engine's prefix cache (SGLang: ``cached_tokens``)."""
    latency_s: float
    """Seconds from request to result, as the engine measured it (SGLang: ``e2e_latency``)."""
    rid: str | None = None
    """The request's id."""
    weight_version: str | None = None
    """Version of the weights that generated it (SGLang: ``meta_info.weight_version``); bumped
    by every weight update, so a trainer can tell on-policy samples from stale ones."""

    def __post_init__(self) -> None:
        if len(self.output_ids) != len(self.logprobs):
            raise PolicyError(
                f"result has {len(self.output_ids)} output ids but {len(self.logprobs)} logprobs"
            )


def logprob_or_nan(x: Any) -> float:
    """A logprob from a server's JSON: NaN for ``null`` (see ``GenerateResult.logprobs``)."""
    return float("nan") if x is None else float(x)


class Policy(abc.ABC):
    """Anything that turns prompts into continuations. Implementations: ``HFPolicy`` (local
    transformers), ``SGLangPolicy`` (HTTP), ``ScriptedPolicy`` (no model)."""

    @abc.abstractmethod
    async def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        """Results in request order. Send all children of a tree node in one call: engines
        with a prefix cache then compute the shared trunk once."""

    def identity(self) -> dict[str, Any]:
        """What produced the samples (recorded in run manifests)."""
        return {"policy": type(self).__name__}

    async def probe(self) -> None:  # noqa: B027 - optional hook, a local policy is ready
        """Check that the policy can answer before a run starts; raise :class:`PolicyError`
        with the reason (one line) if not. Policies behind a server ask it; the default (a
        policy that is ready once constructed) does nothing."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most policies hold nothing
        """Release connections or memory."""
