"""Fixtures for policy tests: a tiny random Llama with a ReAct tokenizer, servers in threads."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from treegym.envs.toy import ToyRoomsEnv
from treegym.policies.react import ReActTemplate


def toy_texts(n_episodes: int = 20) -> list[str]:
    """Template renderings of random ToyRooms play: enough text to train a tokenizer on."""
    import random

    template, rng, texts = ReActTemplate(tokenizer=None), random.Random(0), []
    env = ToyRoomsEnv(max_episode_steps=8)
    for ep in range(n_episodes):
        obs, info = env.reset(seed=ep, options={"task": ep})
        texts.append(template.prompt_text(obs, info["admissible_commands"]))
        for _ in range(8):
            action = rng.choice(info["admissible_commands"])
            texts.append(template.assistant_text("let me try", action))
            obs, _, term, trunc, info = env.step(action)
            texts.append(template.observation_text(obs, info["admissible_commands"]))
            if term or trunc:
                break
    return texts


def build_tiny_model(path: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from treegym.policies.tokenizer import train_react_tokenizer

    tok = train_react_tokenizer(toy_texts(), vocab_size=400)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        bos_token_id=None,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """An aiohttp application served on 127.0.0.1 from its own event-loop thread."""

    def __init__(self, app) -> None:
        from aiohttp import web

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app)
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            self._loop.run_until_complete(site.start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(30), "server thread did not start"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)


@pytest.fixture
def serve_app() -> Iterator:
    servers: list[ServerThread] = []

    def start(app) -> ServerThread:
        servers.append(ServerThread(app))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


async def _client_gone(request, limit_s: float = 300.0) -> None:
    """Return once the client has closed the connection (aiohttp does not cancel the handler;
    the transport is the one place that shows it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while request.transport is not None and not request.transport.is_closing():
        assert loop.time() < deadline, "the client never gave up on a hanging request"
        await asyncio.sleep(0.01)


def with_generate(real, generate):
    """A copy of the app ``real`` whose ``/generate`` is ``generate(request, real_generate)``
    (``real_generate``: the real server's handler); every other route (/health, /model_info,
    ...) is the real server's."""
    from aiohttp import web

    real_generate = next(
        r.handler for r in real.router.routes() if r.resource.canonical == "/generate"
    )
    app = web.Application()
    for route in real.router.routes():
        if route.resource.canonical != "/generate":
            app.router.add_route(route.method, route.resource.canonical, route.handler)
    app.router.add_post("/generate", lambda request: generate(request, real_generate))
    return app


def faulty_generate_app(real, plan, hang_s: float | None = 3.0):
    """An app whose ``/generate`` asks ``plan(n)`` what the n-th call gets — ``None`` (the real
    server's answer) or a fault: ``"5xx"``, ``"hang"`` (sleeps ``hang_s``, then 504; with
    ``hang_s=None`` it waits until the client gives up and disconnects, so a client timeout
    always wins however loaded the machine), ``"garbage"`` (200 with a non-JSON body) or
    ``"drop"`` (closes the connection). Returns the app and the list of call numbers it has
    seen."""
    import itertools

    from aiohttp import web

    counter, calls = itertools.count(1), []

    async def generate(request, real_generate):
        n = next(counter)
        calls.append(n)
        mode = plan(n)
        if mode == "5xx":
            return web.Response(status=503, text="overloaded")
        if mode == "hang":
            if hang_s is None:
                await _client_gone(request)
            else:
                await asyncio.sleep(hang_s)
            return web.Response(status=504, text="too late")
        if mode == "garbage":
            return web.Response(text="<html>not json</html>")
        if mode == "drop":
            request.transport.close()
            return web.Response(text="")
        return await real_generate(request)

    return with_generate(real, generate), calls
