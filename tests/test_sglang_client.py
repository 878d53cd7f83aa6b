"""SGLangPolicy against a real local server of SGLang's protocol, faults included."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import warnings

import pytest
import torch
from aiohttp import web

from tests.policy_fixtures import (  # noqa: F401 - fixtures
    faulty_generate_app,
    free_port,
    serve_app,
    tiny_model,
    with_generate,
)
from treegym.policies import GenerateRequest, PolicyError, SamplingParams
from treegym.policies.hf import HFPolicy
from treegym.policies.server import make_app
from treegym.policies.sglang import SGLangPolicy


def _prompt(policy: HFPolicy, text: str) -> tuple[int, ...]:
    return tuple(policy.tokenizer.encode(text, add_special_tokens=False))


def _requests(policy: HFPolicy, n: int = 3) -> list[GenerateRequest]:
    prompt = _prompt(policy, "<|system|>x<|end|>\n<|user|>-= Hall =-<|end|>\n<|assistant|>")
    return [GenerateRequest(prompt, SamplingParams(max_new_tokens=12, seed=s)) for s in range(n)]


def test_client_matches_the_local_policy_and_reports_cached_tokens(tiny_model, serve_app):  # noqa: F811
    server = serve_app(make_app(HFPolicy(tiny_model)))
    local = HFPolicy(tiny_model, cache_bytes=0)
    client = SGLangPolicy(server.url)
    reqs = _requests(local)

    async def run():
        first = await client.generate(reqs)
        second = await client.generate(reqs)
        info = await client.get_json("/get_server_info")
        await client.aclose()
        return first, second, info

    first, second, info = asyncio.run(run())
    direct = asyncio.run(local.generate(reqs))
    for remote, mine in zip(first, direct, strict=True):
        assert remote.output_ids == mine.output_ids
        assert remote.logprobs == pytest.approx(mine.logprobs, abs=1e-5)
        assert remote.prompt_tokens == len(reqs[0].input_ids)
    n = len(reqs[0].input_ids)
    # SGLang's default fcfs schedule matches every request of a prefill batch before any runs
    # (0.5.23 scheduler.py:4203-4274, schedule_batch.py:2965-2995), so children sent together
    # report nothing cached on a cold server; later, at most prompt - 1 (schedule_batch.py:1768)
    assert [r.cached_tokens for r in first] == [0, 0, 0]
    assert [r.cached_tokens for r in second] == [n - 1, n - 1, n - 1]
    assert info["prefix_cache_tokens"] > 0 and info["version"].startswith("treegym-hf")
    # treegym's engine itself computed the shared prompt once (n - 1 prefilled, then the last
    # prompt token of each of the 6 requests), which its /server_info says apart
    assert info["computed_prompt_tokens"] == n - 1 + 6 and info["served_requests"] == 6


def test_server_speaks_sglangs_body_shapes(tiny_model, serve_app):  # noqa: F811
    policy = HFPolicy(tiny_model)
    server = serve_app(make_app(policy))
    ids = list(_requests(policy, 1)[0].input_ids)

    async def post(body):
        import aiohttp

        async with aiohttp.ClientSession() as s, s.post(server.url + "/generate", json=body) as r:
            return r.status, await r.json(content_type=None)

    status, single = asyncio.run(post({
        "input_ids": ids, "sampling_params": {"max_new_tokens": 4, "temperature": 0},
        "return_logprob": True, "rid": "abc", "model": "x", "stream": False, "log_metrics": True,
    }))  # fmt: skip
    assert status == 200 and isinstance(single, dict) and single["meta_info"]["id"] == "abc"
    meta = single["meta_info"]
    assert (
        meta["completion_tokens"] == len(single["output_ids"]) == len(meta["output_token_logprobs"])
    )
    assert meta["finish_reason"]["type"] in ("stop", "length")
    status, batch = asyncio.run(
        post({"input_ids": [ids, ids[:5]], "sampling_params": {"max_new_tokens": 2}})
    )
    assert status == 200 and isinstance(batch, list) and len(batch) == 2
    assert "output_token_logprobs" not in batch[0]["meta_info"]
    for bad, message in [
        ({"sampling_params": {}}, "exactly one"),
        ({"input_ids": [10**9]}, "token ids"),
        ({"input_ids": ids, "stream": True}, "streaming"),
        ({"input_ids": [ids, ids], "sampling_params": [{}]}, "sampling_params for 2 prompts"),
    ]:
        status, body = asyncio.run(post(bad))
        assert status == 400 and message in body["error"]["message"]


def test_server_is_as_strict_as_sglang(tiny_model, serve_app):  # noqa: F811
    """What SGLang 0.5.23 refuses, the stand-in refuses with the same body: the schema gate
    (``api/v1/api_types.py`` ``decode_SamplingParams`` 1259-1321, unknown sampling keys and
    wrong types, answered ``{"error": "<text>"}`` by ``http_server.py`` 933-940),
    ``SamplingParams.verify`` (``sampling/sampling_params.py`` 252-310) and the rid checks
    (``managers/io_struct.py`` 390-397, 759-775), answered ``{"error": {"message"}}``
    (``http_server.py`` 2246-2250); what it cannot do (stop strings, penalties, ``n``) is
    refused instead of ignored."""
    policy = HFPolicy(tiny_model)
    server = serve_app(make_app(policy))
    ids = list(_requests(policy, 1)[0].input_ids)

    async def post(body):
        import aiohttp

        async with aiohttp.ClientSession() as s, s.post(server.url + "/generate", json=body) as r:
            return r.status, await r.json(content_type=None)

    schema = [
        ({"temprature": 0.5}, "unknown field `temprature`, expected one of `max_new_tokens`"),
        ({"temperature": "0.5"}, 'invalid type: string "0.5", expected f64'),
        ({"max_new_tokens": True}, "invalid type: boolean `true`, expected i64"),
        ({"stop_token_ids": [1.5]}, "invalid type: floating point `1.5`, expected i64"),
    ]
    for params, text in schema:
        status, body = asyncio.run(post({"input_ids": ids, "sampling_params": params}))
        assert status == 400 and set(body) == {"error"} and body["error"].startswith(text), body
    status, body = asyncio.run(post({"input_ids": ids, "return_logprob": "yes"}))
    assert status == 400 and body["error"].startswith('invalid type: string "yes"'), body
    values = [
        ({"input_ids": ids, "sampling_params": {"top_p": 0}}, "top_p must be in (0, 1], got 0"),
        ({"input_ids": ids, "sampling_params": {"top_k": 0}}, "top_k must be -1 (disable) or"),
        ({"input_ids": ids, "sampling_params": {"temperature": -1}}, "temperature must be a non"),
        ({"input_ids": ids, "sampling_params": {"min_p": 0.1}}, "not supported"),
        ({"input_ids": ids, "sampling_params": {"stop": "x"}}, "not supported"),
        ({"input_ids": ids, "sampling_params": {"n": 2}}, "not supported"),
        ({"input_ids": [ids, ids], "rid": ["a"]}, "rids length mismatch with the batch_size"),
        ({"input_ids": [ids, ids], "rid": ["a", "a"]}, "Duplicate request IDs detected"),
        ({"input_ids": ids, "logprob_start_len": 0}, "not supported"),
    ]
    for bad, text in values:
        status, body = asyncio.run(post(bad))
        assert status == 400 and text in body["error"]["message"], (bad, body)
    # null means the default (SGLang's decode), an int is a float, text in logprobs on request
    status, ok = asyncio.run(post({
        "input_ids": ids, "return_logprob": True, "return_text_in_logprobs": True,
        "sampling_params": {"temperature": None, "top_p": 1, "max_new_tokens": 2, "top_k": -1},
    }))  # fmt: skip
    assert status == 200, ok
    triples = ok["meta_info"]["output_token_logprobs"]
    assert [t[2] for t in triples] == [policy.tokenizer.decode([t[1]]) for t in triples]


def test_server_updates_weights_from_disk_like_sglang(tiny_model, serve_app, tmp_path):  # noqa: F811
    import aiohttp
    from transformers import AutoModelForCausalLM

    policy = HFPolicy(tiny_model)
    server = serve_app(make_app(policy))
    ids = list(_requests(policy, 1)[0].input_ids)
    other = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    other.save_pretrained(tmp_path / "step1")

    async def post(path, body):
        async with aiohttp.ClientSession() as s, s.post(server.url + path, json=body) as r:
            return r.status, await r.json(content_type=None)

    greedy = {"input_ids": ids, "sampling_params": {"max_new_tokens": 6, "temperature": 0}}
    _, before = asyncio.run(post("/generate", greedy))
    status, body = asyncio.run(post("/update_weights_from_disk", {
        "model_path": str(tmp_path / "step1"), "weight_version": "step-1", "flush_cache": True,
    }))  # fmt: skip
    assert status == 200 and body["success"] is True and body["num_paused_requests"] == 0
    _, after = asyncio.run(post("/generate", greedy))
    assert after["meta_info"]["cached_tokens"] == 0  # the cache was flushed
    assert after["output_ids"] != before["output_ids"]
    for bad, status_want, field in [
        ({"model_path": str(tmp_path / "nowhere")}, 400, "message"),
        ({"weight_version": "x"}, 400, "error"),
        ({"model_path": str(tmp_path / "step1"), "typo": 1}, 400, "error"),
    ]:
        status, body = asyncio.run(post("/update_weights_from_disk", bad))
        assert status == status_want and body[field], body
    assert "model_path" in asyncio.run(post("/update_weights_from_disk", {}))[1]["error"]
    status, body = asyncio.run(post("/update_weights_from_disk", {"model_path": str(tmp_path)}))
    assert body["success"] is False and "no *.safetensors weights" in body["message"]
    _, again = asyncio.run(post("/generate", greedy))
    assert again["output_ids"] == after["output_ids"]  # step-1 weights still serve


def _recording_app(real: web.Application) -> tuple[web.Application, list]:
    """``real`` with every /generate body and its headers recorded before ``real`` answers."""
    seen: list = []

    async def generate(request, real_generate):
        seen.append((await request.json(), dict(request.headers)))
        return await real_generate(request)

    return with_generate(real, generate), seen


def test_every_request_carries_a_seed_sglang_and_its_router_accept(tiny_model, serve_app):  # noqa: F811
    """SGLang samples with ``sampling_seed`` only under ``--enable-deterministic-inference``, and
    then gives an unseeded request 42 (``sampling/sampling_batch_info.py`` 157-172): unseeded
    children would all sample alike. sglang-router parses the seed as u64 (a negative one is a
    422) and SGLang as i64 (``sampling_params.py`` 302-312): seeds go out in [0, 2**63)."""
    policy = HFPolicy(tiny_model)
    app, seen = _recording_app(make_app(policy))
    client = SGLangPolicy(serve_app(app).url)
    prompt = _requests(policy, 1)[0].input_ids
    reqs = [GenerateRequest(prompt, SamplingParams(max_new_tokens=3)) for _ in range(2)]
    reqs.append(GenerateRequest(prompt, SamplingParams(max_new_tokens=3, seed=-5)))

    async def run():
        try:
            await client.generate(reqs)
            await client.generate(reqs[2:])
        finally:
            await client.aclose()

    asyncio.run(run())
    (batch, _), (single, _) = seen
    seeds = [p["sampling_seed"] for p in batch["sampling_params"]]
    assert all(isinstance(x, int) and 0 <= x < 2**63 for x in seeds), seeds
    assert seeds[0] != seeds[1]  # unseeded requests get seeds of their own
    assert single["sampling_params"]["sampling_seed"] == seeds[2]  # the same seed, the same wire


def test_requests_of_one_tree_carry_one_routing_key(tiny_model, serve_app):  # noqa: F811
    """``X-SMG-Routing-Key`` (sglang-router's ``manual`` policy pins a key to a worker): every
    prompt of a tree carries its root prompt's key, another tree another key."""
    policy = HFPolicy(tiny_model)
    app, seen = _recording_app(make_app(policy))
    client = SGLangPolicy(serve_app(app).url)
    hall, kitchen = (_prompt(policy, f"<|system|>x<|end|>\n<|user|>-= {room} =-<|end|>\n")
                     for room in ("Hall", "Kitchen"))  # fmt: skip

    def reqs(ids, n=2):
        return [GenerateRequest(ids, SamplingParams(max_new_tokens=4, seed=s)) for s in range(n)]

    async def run():
        try:
            first = await client.generate(reqs(hall))
            await client.generate(reqs(hall + first[0].output_ids + hall, 1))
            await client.generate(reqs(kitchen))
        finally:
            await client.aclose()

    asyncio.run(run())
    keys = [headers.get("X-SMG-Routing-Key") for _, headers in seen]
    assert keys[0] and keys[0] == keys[1] and keys[2] and keys[2] != keys[0], keys


def _flaky_app(real: web.Application, failures: int, mode: str) -> tuple[web.Application, list]:
    """Answers the first ``failures`` /generate calls with ``mode``, then forwards to ``real``."""
    return faulty_generate_app(real, lambda n: mode if n <= failures else None)


@pytest.mark.parametrize("mode", ["5xx", "drop"])
def test_retries_with_backoff_then_succeeds(tiny_model, serve_app, mode):  # noqa: F811
    policy = HFPolicy(tiny_model)
    app, calls = _flaky_app(make_app(policy), failures=2, mode=mode)
    server = serve_app(app)
    client = SGLangPolicy(server.url, retries=4, backoff_s=0.01)
    results = asyncio.run(client.generate(_requests(policy, 2)))
    asyncio.run(client.aclose())
    assert len(results) == 2 and len(calls) == 3


def test_gives_up_with_a_clear_error(tiny_model, serve_app):  # noqa: F811
    policy = HFPolicy(tiny_model)
    app, calls = _flaky_app(make_app(policy), failures=99, mode="5xx")
    server = serve_app(app)
    client = SGLangPolicy(server.url, retries=3, backoff_s=0.01)
    with pytest.raises(
        PolicyError, match=r"failed after 3 attempts; last error: HTTP 503: overloaded"
    ):
        asyncio.run(client.generate(_requests(policy, 1)))
    assert len(calls) == 3


def test_hanging_server_times_out(tiny_model, serve_app):  # noqa: F811
    policy = HFPolicy(tiny_model)
    app, _ = _flaky_app(make_app(policy), failures=99, mode="hang")
    server = serve_app(app)
    client = SGLangPolicy(server.url, retries=2, backoff_s=0.01, timeout_s=0.5)
    with pytest.raises(PolicyError, match="TimeoutError"):
        asyncio.run(client.generate(_requests(policy, 1)))


def test_refused_connection_and_malformed_bodies(tiny_model, serve_app):  # noqa: F811
    policy = HFPolicy(tiny_model)
    dead = SGLangPolicy(f"http://127.0.0.1:{free_port()}", retries=2, backoff_s=0.01)
    with pytest.raises(PolicyError, match=r"failed after 2 attempts; last error: ClientConnector"):
        asyncio.run(dead.generate(_requests(policy, 1)))
    app, calls = _flaky_app(make_app(policy), failures=99, mode="garbage")
    server = serve_app(app)
    client = SGLangPolicy(server.url, retries=3, backoff_s=0.01)
    with pytest.raises(PolicyError, match="not JSON"):
        asyncio.run(client.generate(_requests(policy, 1)))
    assert len(calls) == 1  # a malformed answer is not retried


def test_malformed_result_shapes_are_named(tiny_model):  # noqa: F811
    client = SGLangPolicy("http://127.0.0.1:1")
    req = GenerateRequest((1, 2))
    good = {"output_ids": [5, 6], "meta_info": {"prompt_tokens": 2, "cached_tokens": 0,
            "finish_reason": {"type": "length", "length": 2},
            "output_token_logprobs": [[-0.1, 5, None], [-0.2, 6, None]]}}  # fmt: skip
    assert client._parse(good, req, 0.1).output_ids == (5, 6)
    legacy = {**good, "token_ids": good["output_ids"]}
    del legacy["output_ids"]
    assert client._parse(legacy, req, 0.1).logprobs == (-0.1, -0.2)
    bad_ids = json.loads(json.dumps(good))
    bad_ids["meta_info"]["output_token_logprobs"][1][1] = 7
    for item, message in [
        ({"meta_info": {}}, "malformed"),
        (bad_ids, "ids differ"),
        (
            {
                **good,
                "meta_info": {
                    **good["meta_info"],
                    "finish_reason": {"type": "abort", "message": "oom"},
                },
            },
            "aborted",
        ),
    ]:
        with pytest.raises(PolicyError, match=message):
            client._parse(item, req, 0.1)


# Responses as SGLang 0.5.23 builds them (python/sglang/srt/...): finish reasons are the
# to_json of managers/schedule_batch.py's FINISH_MATCHED_TOKEN (284-293), FINISH_LENGTH
# (319-329) and FINISH_ABORT (332-345); meta_info is filled in managers/tokenizer_manager.py
# (2507-2513: id, finish_reason, prompt_tokens, weight_version, num_retractions; 2553-2559:
# reasoning_tokens, completion_tokens, cached_tokens; 2753: e2e_latency) and its logprobs are
# detokenize_logprob_tokens' [logprob, token_id, None] triples (3098-3108, text only with
# return_text_in_logprobs); a finished non-streamed answer is {"text", "output_ids",
# "meta_info"} (2652-2657). The stop token stays in output_ids: the detokenizer trims it from
# the text's ids only (detokenizer_manager.py 194-226) and passes output_ids through (473).
# orjson (utils/json_response.py 15-17) writes a NaN or infinite logprob as null, which the
# schema allows (api/v1/api_types.py LogprobEntry, 340-352).
def _sglang_answer(output_ids, finish, logprobs, **meta):
    triples = [[lp, t, None] for lp, t in zip(logprobs, output_ids, strict=True)]
    return {
        "text": "(detokenized)",
        "output_ids": list(output_ids),
        "meta_info": {
            "id": "0f3c", "finish_reason": finish, "prompt_tokens": 5,
            "weight_version": "default", "num_retractions": 0, "reasoning_tokens": 0,
            "completion_tokens": len(output_ids), "cached_tokens": 4, "e2e_latency": 0.012,
            "output_token_logprobs": triples,
            **meta,
        },
    }  # fmt: skip


def test_parses_the_response_shapes_sglang_sends():
    client = SGLangPolicy("http://127.0.0.1:1")
    req = GenerateRequest((1, 2, 3, 4, 5))
    stop = client._parse(
        _sglang_answer([7, 2], {"type": "stop", "matched": 2}, [-0.5, -0.1]), req, 0.1
    )
    assert stop.output_ids == (7, 2) and stop.finish_reason == "stop"  # the stop token kept
    assert stop.logprobs == (-0.5, -0.1) and stop.cached_tokens == 4 and stop.prompt_tokens == 5
    assert stop.weight_version == "default" and stop.latency_s == 0.012
    length = client._parse(
        _sglang_answer([7, 8, 9], {"type": "length", "length": 3}, [-1.0, None, -0.2]), req, 0.1
    )
    assert length.finish_reason == "length" and length.output_ids == (7, 8, 9)
    # a null logprob is NaN: the token was generated, its logprob is unknown (treegym train
    # stops the round on it instead of training on a made-up number)
    assert math.isnan(length.logprobs[1]) and length.logprobs[::2] == (-1.0, -0.2)
    retracted = {"type": "abort", "status_code": 503, "err_type": None,
                 "message": "Retracted under decode memory pressure."}  # fmt: skip
    with pytest.raises(PolicyError, match=r"aborted the request \(status 503\): Retracted under"):
        client._parse(_sglang_answer([7], retracted, [-0.3]), req, 0.1)
    cancelled = {"type": "abort", "message": "Aborted", "status_code": None, "err_type": None}
    with pytest.raises(PolicyError, match=r"aborted the request: Aborted$"):
        client._parse(_sglang_answer([], cancelled, []), req, 0.1)


def _answering_app(status: int, body: dict) -> tuple[web.Application, list]:
    """A /generate that always answers ``status`` with ``body`` (SGLang's error shapes)."""
    app, calls = web.Application(), []

    async def generate(_):
        calls.append(1)
        return web.json_response(body, status=status)

    app.router.add_post("/generate", generate)
    return app, calls


def test_a_batch_sglang_fails_fails_with_sglangs_message(serve_app):  # noqa: F811
    # an abort with a 4xx status fails the whole (batch) request: a ValueError becomes
    # {"error": {"message"}} (http_server.py 983-990, 2246-2250; tokenizer_manager.py 1891-1921)
    app, calls = _answering_app(400, {"error": {"message": "Duplicate request ID detected: a"}})
    client = SGLangPolicy(serve_app(app).url, retries=3, backoff_s=0.01)
    reqs = [GenerateRequest((1, 2), SamplingParams(max_new_tokens=2)) for _ in range(2)]
    with pytest.raises(
        PolicyError, match=r"refused the request: HTTP 400: Duplicate request ID detected: a$"
    ):
        asyncio.run(client.generate(reqs))
    assert calls == [1]  # a refusal is not retried
    # other statuses raise fastapi's HTTPException, answered as SGLang's ErrorResponse (578-632)
    busy = {"object": "error", "message": "Retracted under decode memory pressure without a "
            "KV backup. Retry later.", "type": "503", "param": None, "code": 503}  # fmt: skip
    app, calls = _answering_app(503, busy)
    client = SGLangPolicy(serve_app(app).url, retries=2, backoff_s=0.01)
    with pytest.raises(PolicyError, match="HTTP 503: Retracted under decode memory pressure"):
        asyncio.run(client.generate(reqs))
    assert calls == [1, 1]  # a 5xx is retried first


@pytest.mark.skipif(
    importlib.util.find_spec("sglang") is None,
    reason="sglang is not installed (it cannot run on these CPU-only machines)",
)
def test_against_a_real_sglang_server(tiny_model):  # noqa: F811
    from treegym.policies.launcher import launched, sglang_command

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with launched(
        sglang_command(str(tiny_model), "127.0.0.1", port, ["--skip-tokenizer-init"]), url
    ):
        client = SGLangPolicy(url)
        policy = HFPolicy(tiny_model)
        reqs = _requests(policy, 2)
        first = asyncio.run(client.generate(reqs))
        second = asyncio.run(client.generate(reqs))
        assert all(len(r.output_ids) == len(r.logprobs) > 0 for r in first)
        assert all(r.cached_tokens > 0 for r in second)


def _info_app(health: int = 200, new_names: bool = True, server_info: dict | None = None):
    """Only the readiness endpoints, answering as told (for ``SGLangPolicy.probe``): SGLang
    0.5.23 names (``/model_info``, ``/server_info``; ``http_server.py`` 801-885) or only the
    older ``/get_*`` ones (older SGLang, sglang-router)."""
    app, seen = web.Application(), []
    info = server_info or {"enable_deterministic_inference": True, "disable_radix_cache": False}

    def answer(path, status, body):
        async def handler(_):
            seen.append(path)
            return web.json_response(body, status=status) if body else web.Response(status=status)

        app.router.add_get(path, handler)

    answer("/health", health, None)
    prefix = "/" if new_names else "/get_"
    answer(prefix + "model_info", 200, {"model_path": "m"})
    answer(prefix + "server_info", 200, info)
    return app, seen


async def _probe(policy: SGLangPolicy) -> None:
    try:
        await policy.probe()
    finally:
        await policy.aclose()


def test_probe_asks_health_then_model_and_server_info_with_older_names_as_fallback(serve_app):  # noqa: F811
    app, seen = _info_app()
    asyncio.run(_probe(SGLangPolicy(serve_app(app).url)))
    assert seen == ["/health", "/model_info", "/server_info"]
    app, seen = _info_app(new_names=False)  # older SGLang, sglang-router
    asyncio.run(_probe(SGLangPolicy(serve_app(app).url)))
    assert seen == ["/health", "/get_model_info", "/get_server_info"]
    app, seen = _info_app(health=503)
    sick = serve_app(app)
    with pytest.raises(PolicyError, match=f"the SGLang server at {sick.url} is not ready: .*503"):
        asyncio.run(_probe(SGLangPolicy(sick.url)))
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(PolicyError, match=f"server at {dead} is not ready: Cannot connect"):
        asyncio.run(_probe(SGLangPolicy(f"{serve_app(_info_app()[0]).url},{dead}")))


def test_a_server_that_ignores_seeds_is_warned_about_once_and_recorded(serve_app):  # noqa: F811
    ignoring = {"enable_deterministic_inference": False, "disable_radix_cache": False}
    policy = SGLangPolicy(serve_app(_info_app(server_info=ignoring)[0]).url)
    with pytest.warns(UserWarning, match="ignores sampling_seed") as caught:
        asyncio.run(_probe(policy))
        asyncio.run(_probe(policy))  # treegym train probes every round: one warning
    assert len(caught) == 1
    assert "--enable-deterministic-inference" in policy.identity()["warning"]
    no_cache = {"enable_deterministic_inference": True, "disable_radix_cache": True}
    policy = SGLangPolicy(serve_app(_info_app(server_info=no_cache)[0]).url)
    with pytest.warns(UserWarning, match="has its radix cache disabled"):
        asyncio.run(_probe(policy))
    fine = SGLangPolicy(serve_app(_info_app()[0]).url)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        asyncio.run(_probe(fine))
    assert "warning" not in fine.identity()


def _with_server_info(real: web.Application, **fields) -> web.Application:
    """``real`` whose ``/server_info`` reports ``fields`` on top of its own answer."""
    app = web.Application()
    for route in real.router.routes():
        handler, path = route.handler, route.resource.canonical
        if path in ("/server_info", "/get_server_info"):

            async def handler(request, original=handler):
                return web.json_response({**json.loads((await original(request)).text), **fields})

        app.router.add_route(route.method, path, handler)
    return app


def test_collect_says_in_its_summary_and_manifest_that_seeds_were_ignored(
    tiny_model,  # noqa: F811
    serve_app,  # noqa: F811
    tmp_path,
):
    from typer.testing import CliRunner

    from treegym.cli import app as cli
    from treegym.harness import load_run

    url = serve_app(
        _with_server_info(make_app(HFPolicy(tiny_model)), enable_deterministic_inference=False)
    ).url
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, [
        "collect", "--env", "treegym/ToyRooms-v0", "-k", "max_episode_steps=2", "--policy",
        f"sglang:{url}", "--tokenizer", str(tiny_model), "--n-tasks", "1", "--sampler", "chain",
        "-p", "group_size=2", "--max-new-tokens", "6", "--workers", "0", "--quiet",
        "--out", str(out),
    ], terminal_width=240)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "policy warning" in res.stdout and "ignores sampling_seed" in res.stdout
    assert "ignores sampling_seed" in load_run(out).manifest["policy"]["warning"]


def test_load_weights_updates_every_engine_and_results_carry_the_version(
    tiny_model,  # noqa: F811
    serve_app,  # noqa: F811
    tmp_path,
):
    from transformers import AutoModelForCausalLM

    engines = [HFPolicy(tiny_model), HFPolicy(tiny_model)]
    client = SGLangPolicy([serve_app(make_app(e)).url for e in engines])
    other = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    other.save_pretrained(tmp_path / "step1")
    (tmp_path / "empty").mkdir()
    req = [GenerateRequest(_requests(engines[0], 1)[0].input_ids,
                           SamplingParams(max_new_tokens=6, temperature=0))]  # fmt: skip

    async def run():
        try:
            before = await client.generate(req)
            version = await client.load_weights(tmp_path / "step1", "step-1")
            after = await client.generate(req)
            following = await client.load_weights(tmp_path / "step1")
            with pytest.raises(PolicyError) as refused:
                await client.load_weights(tmp_path / "empty")
            return before, version, after, following, refused.value
        finally:
            await client.aclose()

    before, version, after, following, refused = asyncio.run(run())
    assert before[0].weight_version == "0" and version == "step-1"
    assert after[0].weight_version == "step-1" and after[0].output_ids != before[0].output_ids
    assert following == "2" and [e.engine.weight_version for e in engines] == ["2", "2"]
    # SGLang's 400 {success: false, message} (http_server.py 1300-1325), with the engine named
    assert "no *.safetensors weights" in str(refused) and client.urls[0] in str(refused)
