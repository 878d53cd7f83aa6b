"""``VLLMPolicy``: a client of vLLM's OpenAI-compatible server, token ids in and out.

vLLM 0.32's server (``python -m vllm.entrypoints.openai.api_server``) serves
``POST /v1/completions``; with a list of ids as ``prompt`` and ``return_token_ids: true`` it is
token-in/token-out (the tokens-only ``/inference/v1/generate`` route exists in the package but
the server does not mount it). Per request: ``max_tokens``, ``temperature``, ``top_p``,
``top_k``, ``seed`` (honoured per request), ``stop_token_ids``, ``logprobs: 0`` (the sampled
token's logprob), ``skip_special_tokens: false``. Per answer: ``choices[0].token_ids`` (the
stop token included), ``choices[0].logprobs.token_logprobs``, ``finish_reason``, and
``usage.prompt_tokens_details.cached_tokens`` (only with ``--enable-prompt-tokens-details``).
One HTTP request per prompt, sent concurrently, because ``usage`` is summed over a batch and
treegym needs each prompt's cached tokens; vLLM's scheduler batches them anyway.

Logprobs: ``treegym serve --engine vllm`` starts vLLM with ``--logprobs-mode
processed_logprobs``, so a logprob is under the temperature-scaled distribution, as with
``HFPolicy`` and SGLang; vLLM's "processed" also applies top-k/top-p truncation, so with those
set the logprobs are under the truncated distribution (vLLM's rule, documented in README).
vLLM caches whole KV blocks, so ``cached_tokens`` comes in block multiples.

Constrained choice (``GenerateRequest.constraint``): ``structured_outputs: {"choice": texts}``
(vLLM 0.32's ``StructuredOutputsParams``, xgrammar by default). vLLM applies the grammar's
bitmask to the logits before its sampler (``apply_grammar_bitmask`` in the model runner), so
the processed logprobs are under the masked distribution; it constrains the text (any
tokenization of it), ended by the model's EOS.

Weight updates (``load_weights``) use vLLM's own routes, mounted when the server runs with
``VLLM_SERVER_DEV_MODE=1`` (the launcher sets it): ``/pause?mode=wait``, ``/collective_rpc``
with ``reload_weights(weights_path=...)``, ``/reset_prefix_cache``, ``/update_weight_version``,
``/resume``. Checkpoints with tied embeddings are refused (see :func:`_check_reloadable`).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from .http import JSONClient, Refused
from .protocol import (
    ChoiceConstraint,
    GenerateRequest,
    GenerateResult,
    Policy,
    PolicyError,
    logprob_or_nan,
)


class VLLMPolicy(Policy):
    """Client of one vLLM server."""

    def __init__(self, url: str, *, timeout_s: float = 300.0, retries: int = 4,
                 backoff_s: float = 0.5) -> None:  # fmt: skip
        self.url = url.strip().rstrip("/")
        if not self.url:
            raise ValueError("no vLLM URL given")
        self.http = JSONClient(timeout_s=timeout_s, retries=retries, backoff_s=backoff_s)
        self.model: str | None = None
        self.weight_version: str | None = None

    def identity(self) -> dict[str, Any]:
        return {"policy": "vllm", "url": self.url, "model": self.model,
                "weight_version": self.weight_version}  # fmt: skip

    async def aclose(self) -> None:
        await self.http.close()

    async def probe(self) -> None:
        """Fail with one line unless the server is up and serves a model."""
        try:
            models = await self.http.get_json(self.url + "/v1/models", timeout_s=10)
            self.model = str(models["data"][0]["id"])
        except (PolicyError, aiohttp.ClientError, asyncio.TimeoutError, KeyError, IndexError,
                TypeError) as exc:  # fmt: skip
            raise PolicyError(f"no vLLM server answers at {self.url}: {exc}") from None

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        if self.model is None:
            await self.probe()
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    def _body(self, req: GenerateRequest) -> dict[str, Any]:
        sp = req.sampling
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": list(req.input_ids),
            "max_tokens": sp.max_new_tokens,
            "temperature": sp.temperature,
            "top_p": sp.top_p,
            "logprobs": 0,
            "return_token_ids": True,
            "stop_token_ids": list(sp.stop_token_ids),
            "skip_special_tokens": False,
        }
        if sp.top_k > 0:
            body["top_k"] = sp.top_k
        if sp.seed is not None:
            body["seed"] = sp.seed
        if sp.ignore_eos:
            body["ignore_eos"] = True
        if req.constraint is not None:
            body["structured_outputs"] = structured_outputs(req.constraint)
        return body

    async def _one(self, req: GenerateRequest) -> GenerateResult:
        t0 = time.perf_counter()
        payload = await self.http.post(self.url + "/v1/completions", self._body(req))
        return self._parse(payload, req, time.perf_counter() - t0)

    def _parse(self, payload: Any, req: GenerateRequest, elapsed: float) -> GenerateResult:
        try:
            choice = payload["choices"][0]
            ids = tuple(int(t) for t in choice["token_ids"])
            logprobs = tuple(logprob_or_nan(x) for x in choice["logprobs"]["token_logprobs"])
            finish = str(choice["finish_reason"])
            usage = payload["usage"]
            details = usage.get("prompt_tokens_details") or {}
            result = GenerateResult(
                output_ids=ids,
                logprobs=logprobs,
                finish_reason=finish if finish in ("stop", "length") else "abort",
                prompt_tokens=int(usage["prompt_tokens"]),
                cached_tokens=int(details.get("cached_tokens") or 0),
                latency_s=elapsed,
                rid=req.rid,
                weight_version=self.weight_version,
            )
        except (KeyError, TypeError, ValueError, IndexError, PolicyError) as exc:
            raise PolicyError(
                f"{self.url}/v1/completions answered a malformed result: {exc!r}"
            ) from None
        if result.finish_reason == "abort":
            raise PolicyError(f"{self.url}/v1/completions aborted the request ({finish})")
        return result

    async def load_weights(self, path: str | Path, weight_version: str | None = None) -> str:
        """Reload the weights at ``path`` in place (same architecture), flush the prefix
        cache and set the weight version; running requests finish first."""
        _check_reloadable(Path(path))
        version = weight_version or str(int(self.weight_version or 0) + 1)
        steps = [
            ("/pause?mode=wait", None),
            ("/collective_rpc", {"method": "reload_weights",
                                 "kwargs": {"weights_path": str(Path(path).resolve())}}),
            ("/reset_prefix_cache", None),
            ("/update_weight_version", {"new_version": version}),
        ]  # fmt: skip
        try:
            for route, body in steps:
                await self.http.post(self.url + route, body, want_json=False)
        except Refused as exc:
            if exc.status == 404:
                raise PolicyError(
                    f"the vLLM server at {self.url} has no weight-update routes: start it with "
                    "VLLM_SERVER_DEV_MODE=1 (treegym serve --engine vllm does)"
                ) from None
            raise PolicyError(f"weight update from {path} failed: {exc}") from None
        finally:
            await self.http.post(self.url + "/resume", None, want_json=False)
        self.weight_version = version
        return version


def _check_reloadable(path: Path) -> None:
    """vLLM 0.32 reloads layer by layer and skips a tied ``lm_head`` (its checkpoint has no
    such tensor), which then keeps the *old* embeddings: logprobs silently come from a mix of
    old and new weights (measured: 0.04 nats off after a 0.05-std change). Refuse instead."""
    import json

    config = path / "config.json"
    if not config.is_file():
        raise PolicyError(f"no Hugging Face model at {path} (config.json missing)")
    if json.loads(config.read_text()).get("tie_word_embeddings", False):
        raise PolicyError(
            f"{path} ties its input and output embeddings, which vLLM 0.32 cannot reload in "
            "place (the tied lm_head keeps the old weights): restart the vLLM server on the new "
            "checkpoint, or train with tie_word_embeddings=false"
        )


_REGEX_SPECIAL = re.compile(r"([.^$*+?()\[\]{}|\\])")


def structured_outputs(constraint: ChoiceConstraint) -> dict[str, Any]:
    """vLLM's ``structured_outputs`` of a constraint: ``choice`` among its texts, or, after a
    free line, a ``regex`` (``[^\\n]*``, a line break, then one of the texts)."""
    if constraint.free_line_break is None:
        return {"choice": list(constraint.texts)}
    choices = "|".join(_REGEX_SPECIAL.sub(r"\\\1", t) for t in constraint.texts)
    return {"regex": f"[^\\n]*\\n({choices})"}
