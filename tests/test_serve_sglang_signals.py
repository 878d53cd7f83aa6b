"""``treegym serve --engine sglang`` and the launcher: SGLang is started so that seeds hold
(``--enable-deterministic-inference`` unless opted out), it is waited on the way SGLang's
``/health`` works, a server that dies is reported with its last log lines, and a SIGTERM to
treegym stops the child too. SGLang cannot run here, so stand-ins (tiny HTTP servers in
subprocesses; a ``sglang.launch_server`` on PYTHONPATH that records its pid and argv) take
its place."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.policy_fixtures import free_port
from treegym.policies import PolicyError
from treegym.policies.launcher import launched

STAND_IN = """
import http.server, json, os, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
open(os.environ["PID_FILE"], "w").write(str(os.getpid()))
open(os.environ["PID_FILE"] + ".argv", "w").write(json.dumps(sys.argv[1:]))
seeds = "--enable-deterministic-inference" in sys.argv
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        info = {"enable_deterministic_inference": seeds, "disable_radix_cache": False}
        body = json.dumps(info).encode() if self.path == "/server_info" else b""
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""

# SGLang's /health (entrypoints/http_server.py 720-799, 0.5.23): 503 while the server starts,
# then a one-token generation it waits for (1 s per poll, up to SGLANG_HEALTH_CHECK_TIMEOUT=20 s)
SLOW_HEALTH = """
import http.server, sys, time
port, seen = int(sys.argv[1]), sys.argv[2]
calls = []
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        calls.append(self.path)
        open(seen, "a").write(self.path + "\\n")
        if self.path == "/health" and calls.count("/health") <= 2:
            self.send_response(503); self.end_headers(); return
        if self.path == "/health":
            time.sleep(3)
        self.send_response(200); self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""

CRASHING = """
import sys
print("loading weights of the model", flush=True)
print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", flush=True)
sys.exit(1)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead too
        return f.read().split(")")[-1].split()[0] != "Z"


def _line_with(proc: subprocess.Popen, text: str, timeout_s: float = 120) -> str:
    """The first line of ``proc``'s output holding ``text`` ('' if it ends first); a silent
    ``proc`` is killed after ``timeout_s`` so the test fails instead of hanging."""
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    try:
        for line in iter(proc.stdout.readline, ""):
            if text in line:
                return line
        return ""
    finally:
        timer.cancel()


def _start_serve(tmp_path: Path, *extra: str, stderr: int) -> tuple[subprocess.Popen, Path]:
    """``treegym serve --engine sglang`` with the stand-in on PYTHONPATH; (process, pid file)."""
    pkg = tmp_path / "sglang"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "launch_server.py").write_text(STAND_IN)
    pid_file = tmp_path / "child.pid"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PID_FILE": str(pid_file)}
    cli = Path(sys.executable).with_name("treegym")
    proc = subprocess.Popen(
        [str(cli), "serve", "--engine", "sglang", "--port", str(free_port()), *extra],
        env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
    )  # fmt: skip
    return proc, pid_file


def test_sigterm_to_serve_stops_the_sglang_child(tmp_path):
    proc, pid_file = _start_serve(tmp_path, stderr=subprocess.STDOUT)
    try:
        assert "SGLang serving" in _line_with(proc, "SGLang serving")
        child = int(pid_file.read_text())
        assert _alive(child)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 143
        deadline = time.monotonic() + 20
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "the SGLang stand-in outlived treegym serve"
    finally:
        proc.kill()
        if pid_file.exists() and _alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def _script(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_the_launcher_waits_for_sglangs_health_then_asks_health_generate(tmp_path):
    port = free_port()
    seen = tmp_path / "seen.txt"
    command = [sys.executable, _script(tmp_path, "slow.py", SLOW_HEALTH), str(port), str(seen)]
    with launched(command, f"http://127.0.0.1:{port}", timeout_s=60):
        pass
    paths = seen.read_text().split()
    # a 503 is "starting, ask again"; a /health that takes seconds is a healthy SGLang
    assert paths[:3] == ["/health"] * 3 and paths[-1] == "/health_generate", paths


def test_a_server_that_dies_while_starting_is_named_with_its_last_log_lines(tmp_path):
    command = [sys.executable, _script(tmp_path, "crash.py", CRASHING)]
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(PolicyError, match="exited with code 1") as err, launched(command, url):
        pass
    assert "CUDA out of memory. Tried to allocate 2.00 GiB" in str(err.value)


def _serve_stand_in(tmp_path: Path, *extra: str) -> tuple[list[str], str]:
    """``treegym serve --engine sglang`` with the stand-in: the argv SGLang got, serve's line."""
    proc, pid_file = _start_serve(tmp_path, *extra, stderr=subprocess.DEVNULL)
    try:
        line = _line_with(proc, "SGLang serving")
        return json.loads(Path(str(pid_file) + ".argv").read_text()), line
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_serve_starts_sglang_so_that_seeds_hold_unless_told_otherwise(tmp_path):
    argv, line = _serve_stand_in(tmp_path / "a")
    assert "--enable-deterministic-inference" in argv
    assert "SGLang serving" in line and "sampling seeds honoured" in line
    argv, line = _serve_stand_in(tmp_path / "b", "--no-deterministic-inference", "--foo", "1")
    assert (
        "--enable-deterministic-inference" not in argv
        and "--no-deterministic-inference" not in argv
    )
    assert argv[-2:] == ["--foo", "1"] and "sampling seeds IGNORED" in line
