"""``treegym serve --engine sglang`` never orphans its SGLang server: a SIGTERM to treegym stops
the child too. SGLang cannot run here, so a stand-in ``sglang.launch_server`` (a tiny /health
server that records its pid) takes its place on PYTHONPATH for this test of the launcher."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.policy_fixtures import free_port

STAND_IN = """
import http.server, os, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
open(os.environ["PID_FILE"], "w").write(str(os.getpid()))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead too
        return f.read().split(")")[-1].split()[0] != "Z"


def test_sigterm_to_serve_stops_the_sglang_child(tmp_path):
    pkg = tmp_path / "sglang"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "launch_server.py").write_text(STAND_IN)
    pid_file = tmp_path / "child.pid"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PID_FILE": str(pid_file)}
    cli = Path(sys.executable).with_name("treegym")
    proc = subprocess.Popen(
        [str(cli), "serve", "--engine", "sglang", "--port", str(free_port())],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert "SGLang serving" in proc.stdout.readline() + proc.stdout.readline()
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
