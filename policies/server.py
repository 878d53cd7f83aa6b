"""A real HTTP server of SGLang's native protocol subset, backed by ``HFPolicy``.

``treegym serve --engine hf --model PATH`` runs it. It speaks what ``SGLangPolicy`` and
``sglang-router`` use (field names from SGLang's ``python/sglang/srt/managers/io_struct.py``
and ``entrypoints/http_server.py``; see ``../shared/SGLANG.md``):

* ``POST /generate`` — ``input_ids`` (one list, or a list of lists for a batch) or ``text``;
  ``sampling_params`` (dict or list); ``return_logprob`` (``return_text_in_logprobs``);
  ``rid``. Checked as strictly as SGLang checks it (``sglang_schema.py``: unknown sampling keys
  and wrong types are ``{"error": "<text>"}``, refused values ``{"error": {"message"}}``, both
  400); top-level keys SGLang does not know (the router adds ``model``, ``log_metrics``, …)
  are ignored. Response: ``{"text", "output_ids", "meta_info": {"id", "finish_reason",
  "prompt_tokens", "completion_tokens", "cached_tokens", "weight_version", "e2e_latency",
  "output_token_logprobs"}}``, or a list of those for a batch; a logprob that is not finite is
  ``null``, as SGLang's orjson writes it.
* ``cached_tokens`` is what SGLang's default ``fcfs`` schedule would report (the engine's
  ``cache_report = "sglang"``): children sent together count only what was cached before them,
  although treegym's engine computes their shared prompt once. ``/server_info``'s
  ``computed_prompt_tokens`` is what the engine did compute (with ``served_requests``).
* ``GET /health``, ``/health_generate``, ``/model_info`` (``/get_model_info``),
  ``/server_info`` (``/get_server_info``; ``enable_deterministic_inference: true``: this engine
  always honours ``sampling_seed``), ``POST /flush_cache`` (400 while requests run, as in
  SGLang), ``POST /update_weights_from_disk`` (SGLang's ``UpdateWeightFromDiskReqInput``
  fields; ``{success, message, num_paused_requests}``, 200 or 400: a checkpoint of another
  shape is refused and the old weights keep serving; ``num_paused_requests`` is 0, as SGLang's
  disk update reports, ``scheduler_components/weight_updater.py`` 138-163).

It binds 127.0.0.1 unless told otherwise. Streaming is not implemented (``stream: true`` is
answered with a 400 that says so).
"""

from __future__ import annotations

import asyncio
import itertools
import math
from typing import Any

from aiohttp import web

from .hf import HFPolicy
from .protocol import GenerateRequest, GenerateResult, PolicyError, SamplingParams
from .sglang_schema import ContractError, check_request, check_sampling, request_ids

SERVER_VERSION = "treegym-hf/0.1"


class BadRequest(ValueError):
    """A /generate body that does not follow the protocol."""


def parse_generate(body: Any, tokenizer: Any) -> tuple[list[GenerateRequest], bool, dict]:
    """``(requests, is_batch, options)`` from a /generate JSON body, checked as SGLang checks
    it (``ContractError``/``ValueRefused`` from ``sglang_schema``, ``BadRequest`` for the rest).
    ``options``: ``logprob`` (per request) and ``logprob_text``."""
    check_request(body)
    if body.get("stream"):
        raise BadRequest("streaming is not supported by this server; send stream=false")
    given = [k for k in ("text", "input_ids", "input_embeds") if body.get(k) is not None]
    if len(given) != 1 or given[0] == "input_embeds":
        raise BadRequest("send exactly one of 'text' or 'input_ids'")
    if given[0] == "text":
        texts = body["text"]
        batch = isinstance(texts, list)
        prompts = [
            tokenizer.encode(t, add_special_tokens=False) for t in (texts if batch else [texts])
        ]
    else:
        ids = body["input_ids"]
        if not ids:
            raise BadRequest("input_ids cannot be empty.")
        batch = isinstance(ids[0], list)
        prompts = ids if batch else [ids]
    vocab = len(tokenizer)
    for p in prompts:
        if not p or not all(0 <= t < vocab for t in p):
            raise BadRequest(f"every prompt must be a non-empty list of token ids in [0, {vocab})")
    params = body.get("sampling_params") or {}
    params_list = params if isinstance(params, list) else [params] * len(prompts)
    if len(params_list) != len(prompts):
        raise BadRequest(f"{len(params_list)} sampling_params for {len(prompts)} prompts")
    rids = request_ids(body.get("rid"), batch, len(prompts))
    checked = [check_sampling(p) for p in params_list]
    try:
        sampling = [SamplingParams.from_sglang(p) for p in checked]
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"bad sampling_params: {exc}") from None
    requests = [
        GenerateRequest(tuple(p), s, rid=r) for p, s, r in zip(prompts, sampling, rids, strict=True)
    ]
    logprob = body.get("return_logprob")
    options = {
        "logprob": logprob if isinstance(logprob, list) else [bool(logprob)] * len(prompts),
        "logprob_text": bool(body.get("return_text_in_logprobs")),
    }
    if len(options["logprob"]) != len(prompts):
        raise BadRequest(f"{len(options['logprob'])} return_logprob for {len(prompts)} prompts")
    return requests, batch, options


def generate_item(res: GenerateResult, rid: str, logprob: bool, text_of: Any) -> dict[str, Any]:
    """One result as SGLang's tokenizer manager writes it (``managers/tokenizer_manager.py``
    2507-2559, 2652-2657); ``text_of(ids)`` decodes, or is ``None`` for no logprob text."""
    finish: dict[str, Any] = (
        {"type": "stop", "matched": res.output_ids[-1]}
        if res.finish_reason == "stop"
        else {"type": "length", "length": len(res.output_ids)}
    )
    meta: dict[str, Any] = {
        "id": rid, "finish_reason": finish, "prompt_tokens": res.prompt_tokens,
        "weight_version": res.weight_version, "completion_tokens": len(res.output_ids),
        "cached_tokens": res.cached_tokens, "e2e_latency": res.latency_s,
    }  # fmt: skip
    if logprob:
        meta["output_token_logprobs"] = [
            [lp if math.isfinite(lp) else None, tok, text_of([tok]) if text_of else None]
            for lp, tok in zip(res.logprobs, res.output_ids, strict=True)
        ]
    return {"output_ids": list(res.output_ids), "meta_info": meta}


#: ``UpdateWeightFromDiskReqInput``'s fields (SGLang 0.5.23 ``managers/io_struct.py``).
UPDATE_WEIGHTS_FIELDS = {
    "model_path": str, "load_format": (str, type(None)), "abort_all_requests": bool,
    "weight_version": (str, type(None)), "is_async": bool, "torch_empty_cache": bool,
    "keep_pause": bool, "recapture_cuda_graph": bool, "token_step": int, "flush_cache": bool,
    "manifest": (dict, type(None)),
}  # fmt: skip


def parse_update_weights(body: Any) -> dict[str, Any]:
    """A checked ``/update_weights_from_disk`` body. The prefix cache is flushed whatever
    ``flush_cache`` says: KV computed by old weights must never serve new ones."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    for key, value in body.items():
        kind = UPDATE_WEIGHTS_FIELDS.get(key)
        if kind is None:
            raise BadRequest(f"unknown field {key!r} for /update_weights_from_disk")
        if not isinstance(value, kind):
            raise BadRequest(f"field {key!r} has the wrong type {type(value).__name__}")
    if not body.get("model_path"):
        raise BadRequest("'model_path' is required")
    if body.get("load_format") not in (None, "auto", "safetensors"):
        raise BadRequest(f"load_format {body['load_format']!r} is not supported (safetensors)")
    return body


def make_app(policy: HFPolicy, *, cache_report: str = "sglang") -> web.Application:
    """The aiohttp application serving ``policy``; ``cache_report`` sets what its
    ``cached_tokens`` mean (the module docstring; ``"engine"``: this engine's reuse)."""
    counter = itertools.count()
    served = [0]
    policy.engine.cache_report = cache_report
    app = web.Application(client_max_size=64 << 20)

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="")

    async def health_generate(_: web.Request) -> web.Response:
        await policy.generate([GenerateRequest((0,), SamplingParams(max_new_tokens=1))])
        served[0] += 1
        return web.Response(text="")

    async def model_info(_: web.Request) -> web.Response:
        return web.json_response({
            "model_path": str(policy.model_path), "tokenizer_path": str(policy.model_path),
            "is_generation": True,
        })  # fmt: skip

    async def server_info(_: web.Request) -> web.Response:
        stats = policy.engine.stats()
        return web.json_response({
            "version": SERVER_VERSION, "model_path": str(policy.model_path),
            "disable_radix_cache": not policy.engine.prefix_cache,
            "context_length": policy.context_length,
            "weight_version": stats["weight_version"],
            "enable_deterministic_inference": True, "schedule_policy": "fcfs",
            "served_requests": served[0],
            "computed_prompt_tokens": stats["prefill_tokens"] + served[0],
            "prefix_cache_tokens": stats["cached_tokens"],
            "prefix_cache_bytes": stats["cached_tokens"] * policy.kv_bytes_per_token,
            "kv_capacity_tokens": stats["kv_capacity_tokens"],
        })  # fmt: skip

    async def flush_cache(_: web.Request) -> web.Response:
        stats = policy.engine.stats()
        if stats["running"] or stats["waiting"]:  # SGLang refuses too: retry when idle
            return web.Response(
                text="Cache not flushed because there are pending requests.", status=400
            )
        await asyncio.wrap_future(policy.engine.when_idle(policy.engine.flush_cache))
        return web.Response(text="Cache flushed.")

    async def update_weights_from_disk(request: web.Request) -> web.Response:
        try:
            body = parse_update_weights(await request.json())
        except (BadRequest, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        try:
            version = await policy.load_weights(body["model_path"], body.get("weight_version"))
        except PolicyError as exc:
            return web.json_response(
                {"success": False, "message": str(exc), "num_paused_requests": 0}, status=400
            )
        return web.json_response({
            "success": True, "num_paused_requests": 0,
            "message": f"Succeeded to update model weights. Weight version updated to {version}.",
        })  # fmt: skip

    async def generate(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            reqs, batch, options = parse_generate(body, policy.tokenizer)
            results = await policy.generate(reqs)
        except ContractError as exc:  # SGLang's schema gate answers a bare string
            return web.json_response({"error": str(exc)}, status=400)
        except (BadRequest, PolicyError, ValueError) as exc:
            return web.json_response({"error": {"message": str(exc)}}, status=400)
        served[0] += len(results)
        text_of = policy.tokenizer.decode if options["logprob_text"] else None
        items = []
        for req, res, logprob in zip(reqs, results, options["logprob"], strict=True):
            item = generate_item(res, req.rid or f"treegym-{next(counter)}", logprob, text_of)
            text = policy.tokenizer.decode(list(res.output_ids), skip_special_tokens=False)
            items.append({"text": text, **item})
        return web.json_response(items if batch else items[0])

    app.router.add_route("*", "/health", health)
    app.router.add_route("*", "/health_generate", health_generate)
    for path in ("/get_model_info", "/model_info"):
        app.router.add_get(path, model_info)
    for path in ("/get_server_info", "/server_info"):
        app.router.add_get(path, server_info)
    app.router.add_post("/flush_cache", flush_cache)
    app.router.add_post("/update_weights_from_disk", update_weights_from_disk)
    app.router.add_post("/generate", generate)
    return app
