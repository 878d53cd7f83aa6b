"""Many engines: the real ``sglang-router`` (cache-aware) in front of two local servers of
SGLang's protocol (``treegym serve --engine hf`` apps on the tiny model), and the client's own
sticky routing over a list of URLs — shared prefixes report cached tokens, a worker that drops
out is recovered from or named."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.policy_fixtures import ServerThread, free_port, tiny_model  # noqa: F401 - fixture
from treegym.policies import GenerateRequest, PolicyError, SamplingParams
from treegym.policies.hf import HFPolicy
from treegym.policies.server import make_app
from treegym.policies.sglang import SGLangPolicy


class Engines:
    """Two hf servers in threads; ``drop(i)`` stops one (once)."""

    def __init__(self, model) -> None:
        self.servers = [ServerThread(make_app(HFPolicy(model))) for _ in range(2)]
        self.live = [True, True]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def entries(self, i: int) -> int:
        with urllib.request.urlopen(self.urls[i] + "/get_server_info", timeout=5) as resp:
            return json.loads(resp.read())["prefix_cache_tokens"]

    def drop(self, i: int) -> None:
        if self.live[i]:
            self.live[i] = False
            self.servers[i].close()

    def close(self) -> None:
        for i in range(2):
            self.drop(i)


@pytest.fixture
def engines(tiny_model):  # noqa: F811
    e = Engines(tiny_model)
    yield e
    e.close()


def _prompt(tokenizer, text: str) -> tuple[int, ...]:
    return tuple(tokenizer.encode(text, add_special_tokens=False))


def _reqs(ids, n: int) -> list[GenerateRequest]:
    return [GenerateRequest(tuple(ids), SamplingParams(max_new_tokens=8, seed=s)) for s in range(n)]


@pytest.fixture
def router(engines):
    assert importlib.util.find_spec("sglang_router"), "sglang-router is a dependency; run setup"
    port = free_port()
    cmd = [sys.executable, "-m", "sglang_router.launch_router", "--worker-urls", *engines.urls,
           "--policy", "cache_aware", "--host", "127.0.0.1", "--port", str(port),
           "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port()),
           "--log-level", "error"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                out = proc.communicate(timeout=10)[0].decode(errors="replace")[-500:]
                pytest.fail(f"sglang-router (a dependency) did not start: {out}")
            time.sleep(0.1)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_router_keeps_a_trunk_on_one_worker_and_survives_a_worker_drop(
    tiny_model,  # noqa: F811
    engines,
    router,
):
    tok = HFPolicy(tiny_model).tokenizer
    root = _prompt(tok, "<|system|>x<|end|>\n<|user|>-= Hall =-<|end|>\n<|assistant|>")
    client = SGLangPolicy(router, retries=2, backoff_s=0.05)

    async def run():
        try:
            # a node's 3 children, the first alone: requests prefilled in one round all report
            # 0 cached (SGLang's fcfs matches a whole round before any of it is prefilled)
            first = await client.generate(_reqs(root, 1))
            first += await client.generate(_reqs(root, 3)[1:])
            child = root + first[0].output_ids + root
            second = await client.generate(_reqs(child, 2))  # the next turn of that branch
            holder = [i for i in range(2) if engines.entries(i)]
            engines.drop(holder[0])  # the worker that holds the trunk drops out
            after = await client.generate(_reqs(child, 2))  # a PolicyError fails the test
            return first, child, second, holder, after, engines.entries(1 - holder[0])
        finally:
            await client.aclose()

    first, _child, second, holder, after, live_entries = asyncio.run(run())
    # children after the first are served from the radix cache of the same worker
    cached = [r.cached_tokens for r in first]
    assert cached[0] == 0 and all(c >= len(root) - 1 for c in cached[1:]), cached
    # the next turn extends the trunk: the router sends it to the worker that has it
    assert all(r.cached_tokens >= len(root) for r in second), [r.cached_tokens for r in second]
    assert len(holder) == 1, "cache-aware routing kept the tree on one worker"
    # a worker dropping out: the next request is served by the other worker (which held
    # nothing before: its prefix cache fills now), not failed
    assert len(after) == 2 and all(r.output_ids for r in after)
    assert live_entries > 0, "the request was not served by the live worker"


def test_client_side_sticky_routing_over_a_list_of_urls(tiny_model, engines):  # noqa: F811
    tok = HFPolicy(tiny_model).tokenizer
    a = _prompt(tok, "<|system|>x<|end|>\n<|user|>-= Hall =-<|end|>\n<|assistant|>")
    b = _prompt(tok, "<|system|>x<|end|>\n<|user|>-= Kitchen =-<|end|>\n<|assistant|>")
    client = SGLangPolicy(",".join(engines.urls), retries=2, backoff_s=0.05)
    assert client.identity()["urls"] == engines.urls

    async def run():
        try:
            # each root's second child after its first (one prefill round reports 0 cached)
            ra = [*await client.generate(_reqs(a, 1)), *await client.generate(_reqs(a, 2)[1:])]
            rb = [*await client.generate(_reqs(b, 1)), *await client.generate(_reqs(b, 2)[1:])]
            entries = [engines.entries(0), engines.entries(1)]
            a2 = a + ra[0].output_ids + a
            # one call mixing two trees' nodes: each group goes to its own engine
            mixed = await client.generate([*_reqs(a2, 2), *_reqs(b + rb[0].output_ids, 1)])
            engines.drop(1)  # b's engine drops out: b's tree moves to engine 0
            moved = await client.generate(_reqs(b + rb[1].output_ids, 2))
            engines.drop(0)
            try:
                await client.generate(_reqs(a2, 1))
                dead = None
            except PolicyError as exc:
                dead = exc
            return ra, entries, mixed, moved, dead
        finally:
            await client.aclose()

    ra, entries, mixed, moved, dead = asyncio.run(run())
    assert entries[0] > 0 and entries[1] > 0, "two roots went to two engines"
    assert ra[1].cached_tokens == len(a) - 1  # SGLang: at most prompt - 1
    assert [r.cached_tokens >= len(a) for r in mixed[:2]] == [True, True]  # same engine as a
    assert mixed[2].cached_tokens >= len(b) - 1
    shared = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    # recomputed on engine 0, which holds only the system prompt that a and b share
    assert len(moved) == 2 and moved[0].cached_tokens == shared
    assert isinstance(dead, PolicyError)
    assert "every SGLang URL is down" in str(dead) and engines.urls[0] in str(dead)
