"""``SGLangPolicy``: a client of SGLang's native ``POST /generate``, token in, token out.

Request and response fields follow SGLang's source (0.5.23, ``python/sglang/srt/``) —
``GenerateReqInput`` in ``managers/io_struct.py`` (``input_ids`` as a list of lists for a batch,
``sampling_params`` as a list, ``return_logprob``, ``logprob_start_len=-1`` for output tokens
only, ``rid``), ``SamplingParams`` in ``sampling/sampling_params.py``, and the ``meta_info``
``managers/tokenizer_manager.py`` fills (2507-2559: ``prompt_tokens``, ``completion_tokens``,
``cached_tokens``, ``finish_reason``, ``weight_version``, ``e2e_latency``;
``output_token_logprobs`` as ``[logprob, token_id, text]`` triples, 3098-3116). ``output_ids``
is read, with the older ``token_ids`` as a fallback. A ``null`` logprob (orjson's rendering of
a NaN or infinite one, ``utils/json_response.py`` 15-17) is NaN in the result: the token was
generated, its logprob is unknown.

Seeds: SGLang samples with ``sampling_seed`` only when started with
``--enable-deterministic-inference``, and then gives an unseeded request the seed 42
(``sampling/sampling_batch_info.py`` 157-172). Every request therefore carries a seed (a fresh
one when ``SamplingParams.seed`` is None) in [0, 2**63), the range both SGLang (i64) and
sglang-router (u64) accept; :meth:`SGLangPolicy.probe` reads each server's ``/server_info`` and
warns once — in the run's summary and manifest too, through :meth:`identity` — when it says the
seeds are ignored or its radix cache is off.

All requests of one ``generate`` call go in one HTTP request, so the children of a tree node
reach the engine together. (Under SGLang's default ``fcfs`` schedule they are matched against
the radix cache before any of them runs, so each reports only what earlier turns cached; the
trunk of earlier turns is what is shared.)

Many engines: a list of engine URLs (``"http://a:30000,http://b:30000"``) for client-side
sticky routing (``sticky_routes.py``): a prompt goes to the URL that served the root prompt of
its tree, so every node of a tree hits the same engine's radix cache; new roots go to the URL
with the fewest requests in flight (then the fewest roots). A URL that fails after its retries
is marked down and its trees move to the others; when every URL is down the error names them.
Or one URL of ``sglang-router``: every request carries its tree's key as
``X-SMG-Routing-Key``, so ``--policy manual --assignment-mode min_group`` spreads trees over
the workers and keeps each on one (``cache_aware`` keeps trunks local but, below its balance
thresholds of 64 requests and 1.5x, sends everything to one worker; ``round_robin`` spreads a
tree's nodes over all). The router takes one ``sampling_params`` object per request (0.3): on
its 422 to a batch, the children go as concurrent single requests.

Faults (``policies/http.py``): connection errors, timeouts and 5xx answers are retried with
exponential backoff; after the last attempt a :class:`PolicyError` names the server and the
last failure. A 4xx or a body that does not follow the protocol fails at once with the server's
message; an aborted request (``finish_reason`` ``abort``, ``managers/schedule_batch.py``
332-345) fails with SGLang's message.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from .http import JSONClient, Refused, Unreachable
from .protocol import (
    ChoiceConstraint,
    GenerateRequest,
    GenerateResult,
    Policy,
    PolicyError,
    logprob_or_nan,
)
from .sticky_routes import StickyRoutes

_FINISH = {"stop": "stop", "length": "length", "abort": "abort"}
ROUTING_HEADER = "X-SMG-Routing-Key"
"""sglang-router's routing-key header (its ``manual`` and ``consistent_hashing`` policies)."""
SEED_SPACE = 2**63
"""Seeds are sent in [0, 2**63): SGLang parses i64, sglang-router u64 (a negative is a 422)."""
HEALTH_TIMEOUT_S = 30.0
"""SGLang's ``/health`` runs a one-token generation and waits up to 20 s for it
(``SGLANG_HEALTH_CHECK_TIMEOUT``, ``entrypoints/http_server.py`` 218, 720-799)."""


def wire_seed(seed: int | None) -> int:
    """The ``sampling_seed`` a request is sent with: its own, mapped into :data:`SEED_SPACE`,
    or a fresh random one (an unseeded request must not get SGLang's shared default, 42)."""
    return secrets.randbelow(SEED_SPACE) if seed is None else seed % SEED_SPACE


def sampling_params(req: GenerateRequest) -> dict[str, Any]:
    """SGLang's ``sampling_params`` of a request; a choice constraint becomes SGLang's
    ``ebnf`` (one alternative per allowed text), which SGLang 0.5's grammar backend (xgrammar)
    applies as a vocabulary mask before sampling: its logprobs are then under the masked
    distribution too. SGLang constrains the *text* (any tokenization of it), ended by EOS."""
    out = req.sampling.to_sglang()
    out["sampling_seed"] = wire_seed(req.sampling.seed)
    if req.constraint is not None:
        out["ebnf"] = ebnf(req.constraint)
    return out


def ebnf(constraint: ChoiceConstraint) -> str:
    """The constraint as an EBNF grammar: one alternative per text, after a free line when
    the constraint has one (``[^\\n]*`` and a line break)."""
    choices = " | ".join(_ebnf_string(t) for t in constraint.texts)
    if constraint.free_line_break is None:
        return "root ::= " + choices
    return f'root ::= [^\\n]* "\\n" ( {choices} )'


def _ebnf_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


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
        self.warnings: list[str] = []
        self._single_only: set[str] = set()
        self._updates = 0

    def identity(self) -> dict[str, Any]:
        out: dict[str, Any] = {"policy": "sglang", "url": ",".join(self.urls)}
        if len(self.urls) > 1:
            out["urls"] = list(self.urls)
        if self.warnings:
            out["warning"] = "; ".join(self.warnings)
        return out

    async def aclose(self) -> None:
        await self.http.close()

    async def get_json(self, path: str) -> Any:
        """GET an info endpoint (``/model_info``, ``/server_info``, …) of the first URL."""
        return await self.http.get_json(self.url + path)

    async def info(self, url: str, name: str) -> Any:
        """``/{name}``, or ``/get_{name}`` where that is missing (older SGLang, sglang-router);
        SGLang 0.5.23 logs a deprecation warning per call of the old names (``http_server.py``
        801-885)."""
        try:
            return await self.http.get_json(f"{url}/{name}", timeout_s=HEALTH_TIMEOUT_S)
        except Refused as exc:
            if exc.status != 404:
                raise
            return await self.http.get_json(f"{url}/get_{name}", timeout_s=HEALTH_TIMEOUT_S)

    async def probe(self) -> None:
        """Readiness before a run: every URL answers ``GET /health``, ``/model_info`` and
        ``/server_info`` (each with the older name as fallback), else one line naming it; then
        a warning for each server that says it ignores seeds or has no radix cache."""
        for url in self.urls:
            try:
                await self.http.get_text(url + "/health", timeout_s=HEALTH_TIMEOUT_S)
                await self.info(url, "model_info")
                facts = await self._server_facts(url)
            except (PolicyError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
                reason = str(exc) or type(exc).__name__
                raise PolicyError(f"the SGLang server at {url} is not ready: {reason}") from None
            for where, info in facts:
                self._check_facts(where, info)

    async def _server_facts(self, url: str) -> list[tuple[str, dict]]:
        """``(url, /server_info)`` of the server, or of each worker a router lists in its
        ``/workers`` (sglang-router's own server info says nothing about its workers); a
        router's URL is sent single requests from then on."""
        try:
            info = await self.info(url, "server_info")
        except Refused:
            return []
        info = info if isinstance(info, dict) else {}
        if "enable_deterministic_inference" in info:
            return [(url, info)]
        facts = []
        workers = await self._workers(url)
        if workers:  # a router: it refuses batches (422), so never send it one
            self._single_only.add(url)
        for worker in workers:
            with_info = await self.info(worker, "server_info")
            facts.append((worker, with_info if isinstance(with_info, dict) else {}))
        return facts

    async def _workers(self, url: str) -> list[str]:
        """The worker URLs of a sglang-router (``GET /workers``); [] for anything else."""
        try:
            listing = await self.http.get_json(url + "/workers", timeout_s=HEALTH_TIMEOUT_S)
        except (PolicyError, aiohttp.ClientError, asyncio.TimeoutError):
            return []
        workers = listing.get("workers") if isinstance(listing, dict) else None
        return [w["url"] for w in workers or [] if isinstance(w, dict) and "url" in w]

    def _check_facts(self, where: str, info: dict) -> None:
        if info.get("enable_deterministic_inference") is False:
            self._warn(
                f"{where} ignores sampling_seed (SGLang uses it only with "
                "--enable-deterministic-inference, which `treegym serve --engine sglang` "
                "passes unless given --no-deterministic-inference): samples do not follow "
                "--seed and are not reproducible"
            )
        if info.get("disable_radix_cache") is True:
            self._warn(
                f"{where} has its radix cache disabled: shared prefixes are recomputed "
                "(SGLang disables it for deterministic inference on attention backends other "
                "than fa3, fa4 and triton: pass --attention-backend triton)"
            )

    def _warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)
            warnings.warn(text, UserWarning, stacklevel=3)

    async def load_weights(self, path: str | Path, weight_version: str | None = None) -> str:
        """SGLang's ``POST /update_weights_from_disk`` (``UpdateWeightFromDiskReqInput``,
        ``managers/io_struct.py`` 1970-1999) on every engine — through sglang-router, which has
        no such route (0.3.2), on every worker its ``/workers`` lists — with ``flush_cache``
        (stale KV is never reused); running requests finish first. Returns the new version
        (``weight_version``, else one more than this client's count of updates)."""
        version = weight_version or str(self._updates + 1)
        body = {"model_path": str(Path(path).resolve()), "weight_version": version,
                "flush_cache": True, "abort_all_requests": False}  # fmt: skip
        for url in self.urls:
            try:
                await self._update_weights(url, body)
            except Refused as exc:
                workers = await self._workers(url) if exc.status == 404 else []
                if not workers:
                    raise PolicyError(f"weight update from {path} failed: {exc}") from None
                for worker in workers:
                    await self._update_weights(worker, body)
        self._updates += 1
        return version

    async def _update_weights(self, url: str, body: dict[str, Any]) -> None:
        answer = await self.http.post(url + "/update_weights_from_disk", body)
        if not (isinstance(answer, dict) and answer.get("success")):  # SGLang answers 400 then
            raise PolicyError(f"{url} did not update its weights: {answer}")

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        if not requests:
            return []
        if len(self.urls) == 1:
            _, key = self.routes.route(requests[0].input_ids)
            return await self._generate_at(self.url, requests, key)
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
                index, key = self.routes.route(batch[0].input_ids)
            except PolicyError:
                raise PolicyError(
                    f"every SGLang URL is down ({len(self.urls)}): " + "; ".join(errors)
                ) from None
            self.routes.inflight[index] += 1
            try:
                return await self._generate_at(self.urls[index], batch, key)
            except Unreachable as exc:
                self.routes.down.add(index)
                errors.append(str(exc))
            finally:
                self.routes.inflight[index] -= 1

    async def _generate_at(
        self, url: str, requests: Sequence[GenerateRequest], key: str
    ) -> list[GenerateResult]:
        if url in self._single_only and len(requests) > 1:
            keys = [key] * len(requests) if len(self.urls) > 1 else [
                self.routes.route(r.input_ids)[1] for r in requests
            ]  # fmt: skip
            singles = (self._generate_one(url, r, k) for r, k in zip(requests, keys, strict=True))
            return list(await asyncio.gather(*singles))
        if len(requests) == 1:
            return [await self._generate_one(url, requests[0], key)]
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
            payload = await self._post(url, body, key)
        except Refused as exc:
            if exc.status != 422:
                raise
            # sglang-router (0.3) takes one sampling_params object (and one rid) per request:
            # a 422 on a batch means a router; from now on send a node's children as
            # concurrent singles, each with its tree's routing key.
            self._single_only.add(url)
            return await self._generate_at(url, requests, key)
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

    async def _generate_one(self, url: str, req: GenerateRequest, key: str) -> GenerateResult:
        body: dict[str, Any] = {
            "input_ids": list(req.input_ids),
            "sampling_params": sampling_params(req),
            "return_logprob": True,
            "logprob_start_len": -1,
        }
        if req.rid:
            body["rid"] = req.rid
        t0 = time.perf_counter()
        payload = await self._post(url, body, key)
        if isinstance(payload, list) and len(payload) == 1:
            payload = payload[0]
        if not isinstance(payload, dict):
            raise PolicyError(
                f"{url}/generate answered {type(payload).__name__} for one request: "
                "expected an object"
            )
        return self._parse(payload, req, time.perf_counter() - t0, url)

    async def _post(self, url: str, body: dict[str, Any], key: str) -> Any:
        return await self.http.post(url + "/generate", body, headers={ROUTING_HEADER: key})

    def _parse(
        self, item: Any, req: GenerateRequest, elapsed: float, url: str | None = None
    ) -> GenerateResult:
        url = url or self.url
        meta = item.get("meta_info") if isinstance(item, dict) else None
        finish = meta.get("finish_reason") if isinstance(meta, dict) else None
        if isinstance(finish, dict) and finish.get("type") == "abort":
            raise PolicyError(f"{url}/generate aborted the request{_abort_text(finish)}")
        try:
            ids = item.get("output_ids")
            if ids is None:
                ids = item["token_ids"]
            triples = meta["output_token_logprobs"]
            reason = _FINISH.get(
                finish.get("type") if isinstance(finish, dict) else str(finish), "abort"
            )
            version = meta.get("weight_version")
            result = GenerateResult(
                output_ids=tuple(int(t) for t in ids),
                logprobs=tuple(logprob_or_nan(x[0]) for x in triples),
                finish_reason=reason,
                prompt_tokens=int(meta["prompt_tokens"]),
                cached_tokens=int(meta.get("cached_tokens", 0)),
                latency_s=float(meta.get("e2e_latency", elapsed)),
                rid=req.rid,
                weight_version=None if version is None else str(version),
            )
            lp_ids = [int(x[1]) for x in triples]
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, PolicyError) as exc:
            raise PolicyError(f"{url}/generate answered a malformed result: {exc!r}") from None
        if list(result.output_ids) != lp_ids:
            raise PolicyError(f"{url}/generate: output_token_logprobs ids differ from output_ids")
        if reason == "abort":
            raise PolicyError(f"{url}/generate aborted the request: {finish}")
        return result


def _abort_text(finish: dict[str, Any]) -> str:
    """`` (status 503, err_type …): message`` of SGLang's ``FINISH_ABORT.to_json``."""
    details = [f"status {finish['status_code']}"] if finish.get("status_code") else []
    details += [f"err_type {finish['err_type']}"] if finish.get("err_type") else []
    return (f" ({', '.join(details)})" if details else "") + f": {finish.get('message')}"
