"""``SGLangPolicy``: a client of SGLang's native ``POST /generate``, token in, token out.

Request and response fields follow SGLang's source — ``GenerateReqInput`` in
``python/sglang/srt/managers/io_struct.py`` (``input_ids`` as a list of lists for a batch,
``sampling_params`` as a list, ``return_logprob``, ``logprob_start_len=-1`` for output tokens
only, ``rid``), ``SamplingParams`` in ``python/sglang/srt/sampling/sampling_params.py``, and the
``meta_info`` the tokenizer manager fills (``prompt_tokens``, ``completion_tokens``,
``cached_tokens``, ``finish_reason``, ``e2e_latency``, ``output_token_logprobs`` as
``[logprob, token_id, text]`` triples). ``output_ids`` is read, with the older ``token_ids``
as a fallback.

All requests of one ``generate`` call go in one HTTP request, so the children of a tree node
reach the engine together and RadixAttention computes their shared trunk once.

Faults: connection errors, timeouts and 5xx answers are retried with exponential backoff;
after the last attempt a :class:`PolicyError` names the server and the last failure. A 4xx or
a body that does not follow the protocol fails at once with the server's message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

from .protocol import GenerateRequest, GenerateResult, Policy, PolicyError

_FINISH = {"stop": "stop", "length": "length", "abort": "abort"}


class SGLangPolicy(Policy):
    """Client of one SGLang (or ``treegym serve``, or ``sglang-router``) endpoint."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 300.0,
        retries: int = 4,
        backoff_s: float = 0.5,
    ) -> None:
        if retries < 1:
            raise ValueError(f"retries must be >= 1, got {retries}")
        self.url = url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.retries, self.backoff_s = retries, backoff_s
        self._session: aiohttp.ClientSession | None = None

    def identity(self) -> dict[str, Any]:
        return {"policy": "sglang", "url": self.url}

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def get_json(self, path: str) -> Any:
        """GET an info endpoint (``/get_model_info``, ``/get_server_info``, …)."""
        async with self._client().get(self.url + path) as resp:
            resp.raise_for_status()
            return await resp.json(content_type=None)

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        if not requests:
            return []
        body: dict[str, Any] = {
            "input_ids": [list(r.input_ids) for r in requests],
            "sampling_params": [r.sampling.to_sglang() for r in requests],
            "return_logprob": True,
            "logprob_start_len": -1,
        }
        if all(r.rid for r in requests):
            body["rid"] = [r.rid for r in requests]
        t0 = time.perf_counter()
        payload = await self._post("/generate", body)
        if not isinstance(payload, list) or len(payload) != len(requests):
            raise PolicyError(
                f"{self.url}/generate answered {type(payload).__name__} "
                f"for a batch of {len(requests)}: expected a list of {len(requests)} results"
            )
        elapsed = time.perf_counter() - t0
        return [
            self._parse(item, req, elapsed) for item, req in zip(payload, requests, strict=True)
        ]

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        last = ""
        for attempt in range(self.retries):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                async with self._client().post(self.url + path, json=body) as resp:
                    text = await resp.text()
                    if resp.status >= 500:
                        last = f"HTTP {resp.status}: {text[:200]}"
                        continue
                    if resp.status >= 400:
                        raise PolicyError(
                            f"{self.url}{path} refused the request: "
                            f"HTTP {resp.status}: {text[:300]}"
                        )
                    try:
                        return await resp.json(content_type=None)
                    except ValueError:
                        raise PolicyError(
                            f"{self.url}{path} answered a body that is not JSON: {text[:120]!r}"
                        ) from None
            except (
                aiohttp.ClientConnectionError,
                aiohttp.ClientPayloadError,
                asyncio.TimeoutError,
            ) as exc:
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise PolicyError(
            f"{self.url}{path} failed after {self.retries} attempts; last error: {last}"
        )

    def _parse(self, item: Any, req: GenerateRequest, elapsed: float) -> GenerateResult:
        try:
            ids = item.get("output_ids")
            if ids is None:
                ids = item["token_ids"]
            meta = item["meta_info"]
            logprobs = [float(x[0]) for x in meta["output_token_logprobs"]]
            lp_ids = [int(x[1]) for x in meta["output_token_logprobs"]]
            finish = meta.get("finish_reason") or {}
            reason = _FINISH.get(
                finish.get("type") if isinstance(finish, dict) else str(finish), "abort"
            )
            result = GenerateResult(
                output_ids=tuple(int(t) for t in ids),
                logprobs=tuple(logprobs),
                finish_reason=reason,
                prompt_tokens=int(meta["prompt_tokens"]),
                cached_tokens=int(meta.get("cached_tokens", 0)),
                latency_s=float(meta.get("e2e_latency", elapsed)),
                rid=req.rid,
            )
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, PolicyError) as exc:
            raise PolicyError(f"{self.url}/generate answered a malformed result: {exc!r}") from None
        if list(result.output_ids) != lp_ids:
            raise PolicyError(
                f"{self.url}/generate: output_token_logprobs ids differ from output_ids"
            )
        if reason == "abort":
            raise PolicyError(f"{self.url}/generate aborted the request: {finish}")
        return result
