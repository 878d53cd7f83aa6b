"""SGLangPolicy against a real local server of SGLang's protocol, faults included."""

from __future__ import annotations

import asyncio
import importlib.util
import json

import pytest
import torch
from aiohttp import web

from tests.policy_fixtures import (  # noqa: F401 - fixtures
    faulty_generate_app,
    free_port,
    serve_app,
    tiny_model,
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
    # a cold server computes the prompt once; SGLang's rule: at most prompt - 1 is cached
    assert [r.cached_tokens for r in first] == [0, n - 1, n - 1]
    assert [r.cached_tokens for r in second] == [n - 1, n - 1, n - 1]
    assert info["prefix_cache_tokens"] > 0 and info["version"].startswith("treegym-hf")


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


def _info_app(health: int = 200, model_info: bool = True, get_model_info: bool = True):
    """Only the readiness endpoints, answering as told (for ``SGLangPolicy.probe``)."""
    app, seen = web.Application(), []

    def answer(path, status, body):
        async def handler(_):
            seen.append(path)
            return web.json_response(body, status=status) if body else web.Response(status=status)

        app.router.add_get(path, handler)

    answer("/health", health, None)
    if model_info:
        answer("/model_info", 200, {"model_path": "m"})
    if get_model_info:
        answer("/get_model_info", 200, {"model_path": "m"})
    return app, seen


def test_probe_asks_health_then_model_info_with_the_older_name_as_fallback(serve_app):  # noqa: F811
    async def probe(url):
        policy = SGLangPolicy(url)
        try:
            await policy.probe()
        finally:
            await policy.aclose()

    app, seen = _info_app()
    asyncio.run(probe(serve_app(app).url))
    assert seen == ["/health", "/model_info"]
    app, seen = _info_app(model_info=False)  # older SGLang, sglang-router
    asyncio.run(probe(serve_app(app).url))
    assert seen == ["/health", "/get_model_info"]
    app, seen = _info_app(health=503)
    sick = serve_app(app)
    with pytest.raises(PolicyError, match=f"the SGLang server at {sick.url} is not ready: .*503"):
        asyncio.run(probe(sick.url))
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(PolicyError, match=f"server at {dead} is not ready: Cannot connect"):
        asyncio.run(probe(f"{serve_app(_info_app()[0]).url},{dead}"))  # every URL is asked
