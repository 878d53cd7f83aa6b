"""Launching inference servers: SGLang's own, or treegym's HF server, and waiting on /health.

``launch_sglang`` starts ``python -m sglang.launch_server`` (SGLang's entry point, see its
``python/sglang/launch_server.py``) as a child process, waits until ``/health`` answers, and
stops it cleanly (SIGTERM, then SIGKILL after a grace period). SGLang cannot run on CPU-only
machines without Intel AMX; tests that need it skip when ``sglang`` is not importable.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence

from .protocol import PolicyError


def wait_healthy(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url/health`` until it answers 200; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise PolicyError(
                f"server process exited with code {proc.returncode} before {url} was healthy"
            )
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.25)
    raise PolicyError(f"{url} was not healthy after {timeout_s:.0f}s (last: {last})")


def stop(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM, wait, then SIGKILL: a server never outlives its launcher."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sglang_command(model: str, host: str, port: int, extra: Sequence[str] = ()) -> list[str]:
    return [sys.executable, "-m", "sglang.launch_server", "--model-path", model,
            "--host", host, "--port", str(port), *extra]  # fmt: skip


@contextlib.contextmanager
def launched(
    command: Sequence[str], url: str, timeout_s: float = 600.0
) -> Iterator[subprocess.Popen]:
    """Run ``command`` as a server at ``url`` for the duration of the ``with`` block."""
    proc = subprocess.Popen(list(command))
    try:
        wait_healthy(url, timeout_s, proc)
        yield proc
    finally:
        stop(proc)
