"""JSON over HTTP with retries: what every client of a remote engine (SGLang, vLLM) needs.

Connection errors, timeouts and 5xx answers are retried with exponential backoff; after the
last attempt an :class:`Unreachable` names the server and the last failure. A 4xx answer
(:class:`Refused`) or a body that is not JSON fails at once with the server's message: those
do not get better by asking again. A JSON error body is reduced to its message
(:func:`error_message`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from .protocol import PolicyError


class Unreachable(PolicyError):
    """A URL still failing (connection, timeout, 5xx) after every retry."""


class Refused(PolicyError):
    """A 4xx answer."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class JSONClient:
    """One ``aiohttp`` session and retrying JSON requests."""

    def __init__(self, *, timeout_s: float = 300.0, retries: int = 4, backoff_s: float = 0.5):
        if retries < 1:
            raise ValueError(f"retries must be >= 1, got {retries}")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.retries, self.backoff_s = retries, backoff_s
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get_text(self, url: str, timeout_s: float | None = None) -> str:
        """One GET (no retries: used for probes and info endpoints); the body, whatever it is
        (``/health`` answers an empty body in SGLang, ``OK`` in sglang-router)."""
        timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s else None
        async with self.session().get(url, timeout=timeout) as resp:
            text = await resp.text()
            if resp.status >= 400:
                raise Refused(f"{url} answered HTTP {resp.status}: {text[:300]}", resp.status)
            return text

    async def get_json(self, url: str, timeout_s: float | None = None) -> Any:
        """:meth:`get_text`, parsed as JSON."""
        return _json(await self.get_text(url, timeout_s), url)

    async def post(
        self, url: str, body: Any, *, want_json: bool = True, headers: dict | None = None
    ) -> Any:
        """POST ``body`` as JSON (with ``headers``); the parsed answer (its text if not
        ``want_json``). Retries as the module says."""
        last = ""
        for attempt in range(self.retries):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                async with self.session().post(url, json=body, headers=headers) as resp:
                    text = await resp.text()
                    if resp.status >= 500:
                        last = f"HTTP {resp.status}: {error_message(text)[:200]}"
                        continue
                    if resp.status >= 400:
                        raise Refused(
                            f"{url} refused the request: HTTP {resp.status}: "
                            f"{error_message(text)[:300]}",
                            resp.status,
                        )
                    return _json(text, url) if want_json else text
            except (
                aiohttp.ClientConnectionError,
                aiohttp.ClientPayloadError,
                asyncio.TimeoutError,
            ) as exc:
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise Unreachable(f"{url} failed after {self.retries} attempts; last error: {last}")


def error_message(text: str) -> str:
    """The message of a JSON error body — SGLang's ``{"error": "<text>"}`` (schema gate),
    ``{"error": {"message"}}`` (ValueError), ``{"message", "code", …}`` (HTTPException) or
    FastAPI's ``{"detail"}`` — else ``text`` itself."""
    import json

    try:
        body = json.loads(text)
    except ValueError:
        return text
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, str):
            return inner
        if isinstance(inner, dict):
            for key in ("message", "detail"):
                if isinstance(inner.get(key), str):
                    return inner[key]
    return text


def _json(text: str, url: str) -> Any:
    import json

    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise PolicyError(f"{url} answered a body that is not JSON: {text[:120]!r}") from None
