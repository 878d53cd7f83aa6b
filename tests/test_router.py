"""Many engines: the real ``sglang-router`` in front of two local servers of SGLang's protocol
(``treegym serve --engine hf`` apps on the tiny model), and the client's own sticky routing over
a list of URLs — a tree's trunk stays on one worker (and ``round_robin``, the control, is seen to
split it), unrelated trees spread over both workers under the recommended ``manual
--assignment-mode min_group`` (and all land on one under ``cache_aware``'s defaults), a worker
that drops out is recovered from or named, and rids and seeds reach the workers through the
router (which refuses a list rid and a negative seed)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from aiohttp import web

from tests.policy_fixtures import ServerThread, free_port, tiny_model, with_generate  # noqa: F401 - fixture
from treegym.policies import GenerateRequest, PolicyError, SamplingParams
from treegym.policies.hf import HFPolicy
from treegym.policies.server import make_app
from treegym.policies.sglang import SGLangPolicy


class Engines:
    """Two hf servers in threads; ``drop(i)`` stops one (once). With ``seen``, every /generate
    body they receive is appended to it; with ``gate``, each is held until the gate is set."""

    def __init__(self, model, seen: list[dict] | None = None, gate=None) -> None:
        apps = [make_app(HFPolicy(model)) for _ in range(2)]
        if seen is not None:
            apps = [_recording(app, seen, gate) for app in apps]
        self.servers = [ServerThread(app) for app in apps]
        self.live = [True, True]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def info(self, i: int) -> dict:
        with urllib.request.urlopen(self.urls[i] + "/get_server_info", timeout=5) as resp:
            return json.loads(resp.read())

    def entries(self, i: int) -> int:
        return self.info(i)["prefix_cache_tokens"]

    def served(self) -> list[int]:
        return [self.info(i)["served_requests"] for i in range(2)]

    def drop(self, i: int) -> None:
        if self.live[i]:
            self.live[i] = False
            self.servers[i].close()

    def close(self) -> None:
        for i in range(2):
            self.drop(i)


def _recording(real: web.Application, seen: list[dict], gate=None) -> web.Application:
    """``real`` with every /generate body recorded before ``real`` answers it (once ``gate``, a
    ``threading.Event``, is set)."""

    async def generate(request, real_generate):
        seen.append(await request.json())
        while gate is not None and not gate.is_set():
            await asyncio.sleep(0.005)
        return await real_generate(request)

    return with_generate(real, generate)


@pytest.fixture
def engines(tiny_model):  # noqa: F811
    e = Engines(tiny_model)
    yield e
    e.close()


def _prompt(tokenizer, text: str) -> tuple[int, ...]:
    return tuple(tokenizer.encode(text, add_special_tokens=False))


def _reqs(ids, n: int) -> list[GenerateRequest]:
    return [GenerateRequest(tuple(ids), SamplingParams(max_new_tokens=8, seed=s)) for s in range(n)]


CACHE_AWARE = ("--policy", "cache_aware")  # its defaults: balance thresholds 64 and 1.5x
RECOMMENDED = ("--policy", "manual", "--assignment-mode", "min_group")  # X-SMG-Routing-Key
ROUND_ROBIN = ("--policy", "round_robin")


@contextlib.contextmanager
def launched_router(urls: list[str], policy: tuple[str, ...]):
    assert importlib.util.find_spec("sglang_router"), "sglang-router is a dependency; run setup"
    port = free_port()
    cmd = [sys.executable, "-m", "sglang_router.launch_router", "--worker-urls", *urls,
           *policy, "--host", "127.0.0.1", "--port", str(port),
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


@pytest.fixture
def router(engines, request):
    """The router over both engines, with ``request.param``'s policy (cache_aware's defaults
    unless parametrized)."""
    with launched_router(engines.urls, getattr(request, "param", CACHE_AWARE)) as url:
        yield url


async def _trunk(client: SGLangPolicy, root: tuple[int, ...], engines: Engines):
    """A node's 3 children, the first alone (requests prefilled in one round all report 0
    cached: SGLang's fcfs matches a whole round before any of it is prefilled), then the next
    turn of one branch (2 samples); returns the children, the next turn's trunk and results,
    and the workers holding any prefix."""
    first = await client.generate(_reqs(root, 1))
    first += await client.generate(_reqs(root, 3)[1:])
    child = root + first[0].output_ids + root
    second = await client.generate(_reqs(child, 2))
    holders = [i for i in range(2) if engines.entries(i)]
    return first, child, second, holders


def _trunk_problems(root, first, child, second, holders) -> list[str]:
    """What says that the trunk did not stay on one worker ([] when it did)."""
    problems = []
    cached = [r.cached_tokens for r in first]
    if cached[0] != 0 or not all(c >= len(root) - 1 for c in cached[1:]):
        problems.append(f"children after the first not served from the trunk's cache: {cached}")
    trunk = len(root) + len(first[0].output_ids) - 1  # cached: the prompt and output, bar one
    if not all(r.cached_tokens >= trunk for r in second):
        problems.append(f"next turn not on the trunk's worker: {[r.cached_tokens for r in second]}")
    if len(holders) != 1:
        problems.append(f"both workers hold prefixes: {holders}")
    return problems


@pytest.mark.parametrize("router", [CACHE_AWARE, RECOMMENDED], indirect=True,
                         ids=["cache_aware", "manual_min_group"])  # fmt: skip
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
            first, child, second, holders = await _trunk(client, root, engines)
            engines.drop(holders[0])  # the worker that holds the trunk drops out
            after = await client.generate(_reqs(child, 2))  # a PolicyError fails the test
            return first, child, second, holders, after, engines.entries(1 - holders[0])
        finally:
            await client.aclose()

    first, child, second, holders, after, live_entries = asyncio.run(run())
    # children after the first are served from the radix cache of the same worker, the next
    # turn extends the trunk and lands there too, and the other worker holds nothing
    assert _trunk_problems(root, first, child, second, holders) == []
    # a worker dropping out: the next request is served by the other worker (which held
    # nothing before: its prefix cache fills now), not failed
    assert len(after) == 2 and all(r.output_ids for r in after)
    assert live_entries > 0, "the request was not served by the live worker"


@pytest.mark.parametrize("router", [ROUND_ROBIN], indirect=True, ids=["round_robin"])
def test_the_trunk_check_catches_round_robin(tiny_model, engines, router):  # noqa: F811
    """The control: the same requests under ``round_robin`` split the trunk, and the checks
    above say so (the children are sent one, then two concurrently: two consecutive requests
    always go to different workers)."""
    tok = HFPolicy(tiny_model).tokenizer
    root = _prompt(tok, "<|system|>x<|end|>\n<|user|>-= Hall =-<|end|>\n<|assistant|>")
    client = SGLangPolicy(router, retries=2, backoff_s=0.05)

    async def run():
        try:
            return await _trunk(client, root, engines)
        finally:
            await client.aclose()

    first, child, second, holders = asyncio.run(run())
    problems = _trunk_problems(root, first, child, second, holders)
    assert any("both workers" in p for p in problems), problems
    assert any("children after the first" in p for p in problems), problems


ROOMS = ("Hall", "Kitchen", "Cellar", "Attic", "Garden", "Study")


@pytest.mark.parametrize(
    ("policy", "spread"), [(RECOMMENDED, True), (CACHE_AWARE, False)],
    ids=["manual_min_group", "cache_aware"],
)  # fmt: skip
def test_unrelated_trees_spread_over_both_workers_under_manual_min_group(
    tiny_model,  # noqa: F811
    policy,
    spread,
):
    """Six trees with unrelated rooms, each arriving while the earlier ones are in flight (the
    workers hold every request until all six first requests have arrived, so no timing
    decides): ``manual --assignment-mode min_group`` pins each tree's ``X-SMG-Routing-Key``
    to the worker with the fewest keys in flight, three trees on each worker; ``cache_aware``
    with its defaults sends all to one (below its balance thresholds, 64 requests and 1.5x, it
    routes by prefix match, and the shared system prompt matches the first worker). Either way
    each tree's next turn finds its whole trunk cached."""
    seen: list[dict] = []
    gate = threading.Event()
    engines = Engines(tiny_model, seen, gate)
    tok = HFPolicy(tiny_model).tokenizer
    roots = [
        _prompt(tok, f"<|system|>You play a text game.<|end|>\n<|user|>-= {room} =-<|end|>\n"
                     "<|assistant|>")
        for room in ROOMS
    ]  # fmt: skip

    async def tree(client, root):
        first = await client.generate(_reqs(root, 1))
        await client.generate(_reqs(root, 2)[1:])  # its sibling
        trunk = root + first[0].output_ids
        return len(trunk), await client.generate(_reqs(trunk + root, 1))

    async def run(client):
        try:
            trees = []
            for k, root in enumerate(roots):
                trees.append(asyncio.ensure_future(tree(client, root)))
                deadline = time.monotonic() + 30
                while len(seen) <= k:  # tree k's first request is held at its worker
                    assert time.monotonic() < deadline, f"request {k} never reached a worker"
                    await asyncio.sleep(0.005)
            gate.set()
            return await asyncio.gather(*trees)
        finally:
            await client.aclose()

    try:
        with launched_router(engines.urls, policy) as url:
            trees = asyncio.run(run(SGLangPolicy(url, retries=2, backoff_s=0.05)))
        served = engines.served()
    finally:
        gate.set()
        engines.close()
    assert sum(served) == 3 * len(roots), served
    if spread:
        assert served == [9, 9], f"min_group gives each worker 3 of the 6 trees: {served}"
    else:
        assert sorted(served) == [0, 18], f"cache_aware sends all to one worker: {served}"
    for trunk, (nxt,) in trees:
        assert nxt.cached_tokens >= trunk - 1, (trunk, nxt.cached_tokens)


def test_rids_and_negative_seeds_reach_the_workers_through_the_router(tiny_model):  # noqa: F811
    """sglang-router 0.3 answers 422 to a list ``rid``, a list ``sampling_params`` and a negative
    ``sampling_seed`` (it parses a u64). A node's children with rids and negative seeds go
    through it: the client's batch (list fields) is answered 422 once, then every request goes
    alone, and what reaches the workers is single requests, each with a string rid and a seed
    in [0, 2**63)."""
    seen: list[dict] = []
    engines = Engines(tiny_model, seen)
    tok = HFPolicy(tiny_model).tokenizer
    root = _prompt(tok, "<|system|>x<|end|>\n<|user|>-= Hall =-<|end|>\n<|assistant|>")
    reqs = [
        GenerateRequest(root, SamplingParams(max_new_tokens=4, seed=s), rid=f"r{i}")
        for i, s in enumerate((-5, 7, -(2**70)))
    ]
    try:
        with launched_router(engines.urls, RECOMMENDED) as url:
            client = SGLangPolicy(url, retries=1)

            async def run():
                try:
                    return await client.generate(reqs), await client.generate(reqs[:1])
                finally:
                    await client.aclose()

            batch, single = asyncio.run(run())
    finally:
        engines.close()
    assert [r.rid for r in batch] == ["r0", "r1", "r2"] and single[0].rid == "r0"
    assert len(seen) == 4, seen
    for body in seen:
        assert isinstance(body["rid"], str), body["rid"]
        assert isinstance(body["input_ids"][0], int)  # one request, not a batch
        seed = body["sampling_params"]["sampling_seed"]
        assert isinstance(seed, int) and 0 <= seed < 2**63, seed


def test_a_probed_router_is_never_sent_a_batch(tiny_model):  # noqa: F811
    """``probe()`` finds a router by its ``/workers``: the client then sends only single
    requests (no 422 round trip), so the router never sees a list ``rid``/``sampling_params``."""
    engines = Engines(tiny_model, [])
    tok = HFPolicy(tiny_model).tokenizer
    root = _prompt(tok, "<|system|>x<|end|>\n<|user|>-= Hall =-<|end|>\n<|assistant|>")
    bodies: list[dict] = []
    try:
        with launched_router(engines.urls, RECOMMENDED) as url:
            client = SGLangPolicy(url, retries=1)
            post = client.http.post

            async def spy(target, body, *args, **kwargs):
                bodies.append(body)
                return await post(target, body, *args, **kwargs)

            client.http.post = spy

            async def run():
                try:
                    await client.probe()
                    return await client.generate(_reqs(root, 3))
                finally:
                    await client.aclose()

            results = asyncio.run(run())
    finally:
        engines.close()
    assert len(results) == 3 and all(r.output_ids for r in results)
    generate = [b for b in bodies if "input_ids" in b]
    assert len(generate) == 3 and all(isinstance(b["input_ids"][0], int) for b in generate)


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
