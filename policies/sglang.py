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

Many engines: give one URL of ``sglang-router`` (``python -m sglang_router.launch_router
--policy cache_aware --worker-urls ...``; its prefix tree keeps a trunk on one worker), or a
list of engine URLs (``"http://a:30000,http://b:30000"``) for client-side sticky routing: a
prompt goes to the URL that served the longest earlier *root* prompt it extends (a tree's first
prompt; every later prompt of that tree extends it), so every node of a tree, and all children
of a node, hit the same engine's radix cache. New roots go to the URL with the fewest requests
in flight (then the fewest roots). A URL that fails after its retries is marked down and its
trees move to the others (their next request recomputes the trunk there); when every URL is
down the error names them.

Faults (``policies/http.py``): connection errors, timeouts and 5xx answers are retried with
exponential backoff; after the last attempt a :class:`PolicyError` names the server and the
last failure. A 4xx or a body that does not follow the protocol fails at once with the server's
message.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import aiohttp

from .http import JSONClient, Refused, Unreachable
from .protocol import GenerateRequest, GenerateResult, Policy, PolicyError

_FINISH = {"stop": "stop", "length": "length", "abort": "abort"}


def sampling_params(req: GenerateRequest) -> dict[str, Any]:
    """SGLang's ``sampling_params`` of a request; a choice constraint becomes SGLang's
    ``ebnf`` (one alternative per allowed text), which SGLang 0.5's grammar backend (xgrammar)
    applies as a vocabulary mask before sampling: its logprobs are then under the masked
    distribution too. SGLang constrains the *text* (any tokenization of it), ended by EOS."""
    out = req.sampling.to_sglang()
    if req.constraint is not None:
        out["ebnf"] = "root ::= " + " | ".join(_ebnf_string(t) for t in req.constraint.texts)
    return out


def _ebnf_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


_MOD = (1 << 61) - 1


def _prefix_hashes(ids: Sequence[int]) -> list[int]:
    """Polynomial hash of every prefix: ``out[k - 1]`` hashes ``ids[:k]``."""
    out, h = [], 0
    for t in ids:
        h = (h * 1_000_003 + int(t) + 1) % _MOD
        out.append(h)
    return out


class StickyRoutes:
    """Prompt -> URL index: a prompt follows the longest known root prompt it extends."""

    def __init__(self, n_urls: int, max_roots: int = 4096) -> None:
        self.n_urls, self.max_roots = n_urls, max_roots
        self.roots: OrderedDict[tuple[int, int], int] = OrderedDict()
        self.lengths: dict[int, int] = {}  # root length -> how many roots have it
        self.inflight = [0] * n_urls
        self.assigned = [0] * n_urls  # roots given to each URL
        self.down: set[int] = set()

    def route(self, ids: Sequence[int]) -> int:
        hashes = _prefix_hashes(ids)
        for length in sorted(self.lengths, reverse=True):
            if length <= len(ids):
                key = (length, hashes[length - 1])
                index = self.roots.get(key)
                if index is not None:
                    if index in self.down:
                        index = self._pick()
                        self.roots[key] = index
                    self.roots.move_to_end(key)
                    return index
        index = self._pick()
        key = (len(ids), hashes[-1] if hashes else 0)
        self.roots[key] = index
        self.lengths[key[0]] = self.lengths.get(key[0], 0) + 1
        while len(self.roots) > self.max_roots:
            (old_len, _), _ = self.roots.popitem(last=False)
            self.lengths[old_len] -= 1
            if not self.lengths[old_len]:
                del self.lengths[old_len]
        return index

    def _pick(self) -> int:
        live = [i for i in range(self.n_urls) if i not in self.down]
        if not live:
            raise PolicyError("every SGLang URL is down")
        index = min(live, key=lambda i: (self.inflight[i], self.assigned[i], i))
        self.assigned[index] += 1
        return index


class SGLangPolicy(Policy):
    """Client of one SGLang (or ``treegym serve``, or ``sglang-router``) endpoint, or of several
    engines given as a list or a comma-separated string (client-side sticky routing)."""

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        timeout_s: float = 300.0,
        retries: int = 4,
        backoff_s: float = 0.5,
    ) -> None:
        self.http = JSONClient(timeout_s=timeout_s, retries=retries, backoff_s=backoff_s)
        urls = url.split(",") if isinstance(url, str) else list(url)
        self.urls = [u.strip().rstrip("/") for u in urls if u.strip()]
        if not self.urls:
            raise ValueError(f"no URL in {url!r}")
        if len(set(self.urls)) != len(self.urls):
            raise ValueError(f"a URL is listed twice in {url!r}")
        self.url = self.urls[0]
        self.routes = StickyRoutes(len(self.urls))
        self._single_only: set[str] = set()

    def identity(self) -> dict[str, Any]:
        if len(self.urls) > 1:
            return {"policy": "sglang", "url": ",".join(self.urls), "urls": list(self.urls)}
        return {"policy": "sglang", "url": self.url}

    async def aclose(self) -> None:
        await self.http.close()

    async def get_json(self, path: str) -> Any:
        """GET an info endpoint (``/model_info``, ``/server_info``, …) of the first URL."""
        return await self.http.get_json(self.url + path)

    async def probe(self) -> None:
        """Readiness before a run: every URL answers ``GET /health``, then ``/model_info``
        (``/get_model_info`` on older SGLang and sglang-router); else one line naming it."""
        for url in self.urls:
            try:
                await self.http.get_json(url + "/health", timeout_s=30)
                try:
                    await self.http.get_json(url + "/model_info", timeout_s=30)
                except Refused as exc:
                    if exc.status != 404:
                        raise
                    await self.http.get_json(url + "/get_model_info", timeout_s=30)
            except (PolicyError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
                reason = str(exc) or type(exc).__name__
                raise PolicyError(f"the SGLang server at {url} is not ready: {reason}") from None

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        if not requests:
            return []
        if len(self.urls) == 1:
            return await self._generate_at(self.url, requests)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(tuple(r.input_ids), []).append(i)
        out: list[GenerateResult | None] = [None] * len(requests)

        async def one(positions: list[int]) -> None:
            batch = [requests[i] for i in positions]
            results = await self._routed(batch)
            for i, res in zip(positions, results, strict=True):
                out[i] = res

        await asyncio.gather(*(one(p) for p in groups.values()))
        return [r for r in out if r is not None]

    async def _routed(self, batch: list[GenerateRequest]) -> list[GenerateResult]:
        """One prompt's requests on its sticky URL; a URL that fails is marked down and the
        batch moves to the next live one."""
        errors: list[str] = []
        while True:
            try:
                index = self.routes.route(batch[0].input_ids)
            except PolicyError:
                raise PolicyError(
                    f"every SGLang URL is down ({len(self.urls)}): " + "; ".join(errors)
                ) from None
            self.routes.inflight[index] += 1
            try:
                return await self._generate_at(self.urls[index], batch)
            except Unreachable as exc:
                self.routes.down.add(index)
                errors.append(str(exc))
            finally:
                self.routes.inflight[index] -= 1

    async def _generate_at(
        self, url: str, requests: Sequence[GenerateRequest]
    ) -> list[GenerateResult]:
        if url in self._single_only and len(requests) > 1:
            return list(await asyncio.gather(*(self._generate_one(url, r) for r in requests)))
        if len(requests) == 1:
            return [await self._generate_one(url, requests[0])]
        body: dict[str, Any] = {
            "input_ids": [list(r.input_ids) for r in requests],
            "sampling_params": [sampling_params(r) for r in requests],
            "return_logprob": True,
            "logprob_start_len": -1,
        }
        if all(r.rid for r in requests):
            body["rid"] = [r.rid for r in requests]
        t0 = time.perf_counter()
        try:
            payload = await self._post("/generate", body, url)
        except Refused as exc:
            if exc.status != 422:
                raise
            # sglang-router (0.3) takes one sampling_params object per request: a 422 on a
            # batch means a router; from now on send a node's children as concurrent singles
            # (its cache-aware policy keeps the shared prompt on one worker).
            self._single_only.add(url)
            return await self._generate_at(url, requests)
        if not isinstance(payload, list) or len(payload) != len(requests):
            raise PolicyError(
                f"{url}/generate answered {type(payload).__name__} "
                f"for a batch of {len(requests)}: expected a list of {len(requests)} results"
            )
        elapsed = time.perf_counter() - t0
        return [
            self._parse(item, req, elapsed, url)
            for item, req in zip(payload, requests, strict=True)
        ]

    async def _generate_one(self, url: str, req: GenerateRequest) -> GenerateResult:
        body: dict[str, Any] = {
            "input_ids": list(req.input_ids),
            "sampling_params": sampling_params(req),
            "return_logprob": True,
            "logprob_start_len": -1,
        }
        if req.rid:
            body["rid"] = req.rid
        t0 = time.perf_counter()
        payload = await self._post("/generate", body, url)
        if isinstance(payload, list) and len(payload) == 1:
            payload = payload[0]
        if not isinstance(payload, dict):
            raise PolicyError(
                f"{url}/generate answered {type(payload).__name__} for one request: "
                "expected an object"
            )
        return self._parse(payload, req, time.perf_counter() - t0, url)

    async def _post(self, path: str, body: dict[str, Any], url: str | None = None) -> Any:
        return await self.http.post((url or self.url) + path, body)

    def _parse(
        self, item: Any, req: GenerateRequest, elapsed: float, url: str | None = None
    ) -> GenerateResult:
        url = url or self.url
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
            raise PolicyError(f"{url}/generate answered a malformed result: {exc!r}") from None
        if list(result.output_ids) != lp_ids:
            raise PolicyError(f"{url}/generate: output_token_logprobs ids differ from output_ids")
        if reason == "abort":
            raise PolicyError(f"{url}/generate aborted the request: {finish}")
        return result
