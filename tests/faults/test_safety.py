"""Safe defaults: the server binds loopback unless told; a pickle where a snapshot or a run
folder file is expected is refused with a clear error and never executed; task ids from task
data cannot make the writer touch anything outside the run folder."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pickle
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from treegym.envs import make
from treegym.envs.errors import CorruptSnapshotError
from treegym.envs.snapshot import PORTABLE_MAGIC, Snapshot
from treegym.harness import ChainSampler, InProcessExecutor, Runner, Task, load_run
from treegym.harness.collect import collect
from treegym.harness.export import file_digest
from treegym.harness.loaders import RunLoadError
from treegym.policies import ScriptedPolicy


class _Boom:
    """Unpickling this runs a command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _payloads(marker: Path) -> dict[str, bytes]:
    raw = pickle.dumps(_Boom(marker))
    # a forged "portable snapshot": right header and a *valid* checksum (SHA-256 is integrity,
    # not authentication) around a pickle — the decoder must still refuse it
    forged = PORTABLE_MAGIC + hashlib.sha256(raw).hexdigest().encode() + b"\n" + raw
    return {"pickle": raw, "forged": forged}


def test_the_payload_runs_when_unpickled(tmp_path):
    """The control: the payloads below do execute code if anything unpickles them."""
    marker = tmp_path / "pwned"
    pickle.loads(_payloads(marker)["pickle"])
    assert marker.exists()


def test_snapshots_never_unpickle(tmp_path):
    marker = tmp_path / "pwned"
    env = make("treegym/ToyRooms-v0")
    env.reset(seed=0, options={"task": 0})
    for name, data in _payloads(marker).items():
        with pytest.raises(CorruptSnapshotError) as info:
            Snapshot.from_portable(data)
        assert "snapshot" in str(info.value), name
        with pytest.raises(CorruptSnapshotError):
            env.restore(data)
    assert not marker.exists(), "a snapshot payload executed code"


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, template):
    out = tmp_path_factory.mktemp("safety") / "run"
    _collect(template, [Task("t0", {"task": 0}, seed=0)], out)
    return out


def _collect(template, tasks, out):
    async def go():
        runner = Runner(policy=ScriptedPolicy(template, "expert", epsilon=0.3, seed=0),
                        template=template, executor=InProcessExecutor(
                            "treegym/ToyRooms-v0", {"max_episode_steps": 5}),
                        sampler=ChainSampler(2))  # fmt: skip
        await collect(runner, tasks, out)

    asyncio.run(go())


# what each file's reader says about a pickle in its place
REFUSED = {
    "manifest.json": "manifest.json: not valid JSON",
    "ledger.jsonl": "ledger.jsonl: line 1 is not a ledger entry",
    "nodes.parquet": "nodes.parquet: not a readable parquet file",
    "samples.parquet": "samples.parquet: not a readable parquet file",
}


@pytest.mark.parametrize("target", sorted(REFUSED))
def test_run_folders_never_unpickle(small_run, tmp_path, target):
    """The pickle reaches the file's parser: a ledger line is a whole line, and a parquet
    file's size and SHA-256 in the manifest are the pickle's (whoever can replace a file can
    rewrite the manifest too), so no digest check stops it first."""
    import shutil

    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    payload = _payloads(marker)["pickle"]
    (run / target).write_bytes(payload + b"\n" if target == "ledger.jsonl" else payload)
    if target.endswith(".parquet"):
        manifest = json.loads((run / "manifest.json").read_text())
        manifest["files"][target] = file_digest(run / target)
        (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RunLoadError, match=re.escape(REFUSED[target])):
        load_run(run)
    assert not marker.exists(), f"loading a run with a pickled {target} executed code"


HOSTILE = ["../../escape", "/tmp/abs-escape", "a/../../b", "..", ".", "parts/../../x",
           "con", "x" * 300, "nul\x00byte", "new\nline", "ünï/cödé"]  # fmt: skip


def test_hostile_task_ids_stay_inside_the_run_folder(tmp_path, template):
    outer = tmp_path / "outer"
    run = outer / "a" / "run"
    run.parent.mkdir(parents=True)
    before = {p for p in tmp_path.rglob("*")}
    abs_target = Path("/tmp/abs-escape")
    existed = abs_target.exists()
    tasks = [Task(tid, {"task": i % 3}, seed=i) for i, tid in enumerate(HOSTILE)]
    _collect(template, tasks, run)
    after = {p for p in tmp_path.rglob("*")}
    outside = [p for p in after - before if run not in (p, *p.parents)]
    assert outside == [], outside
    assert abs_target.exists() == existed
    loaded = load_run(run)
    assert sorted(loaded.task_ids) == sorted(HOSTILE)  # ids kept as data, verbatim
    names = [p.name for p in (run / "parts").iterdir()] if (run / "parts").exists() else []
    assert all(not any(t in n for t in ("escape", "..")) for n in names)


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of sockets listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, p = local.rsplit(":", 1)
                if state == "0A" and int(p, 16) == port:
                    found.append(addr)
    return found


def test_serve_binds_loopback_unless_told():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = str(Path(sys.executable).parent / "treegym")
    proc = subprocess.Popen([exe, "serve", "--port", str(port), "--cache-mb", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not _listening(port):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "treegym serve did not start listening"
            time.sleep(0.2)
        assert _listening(port) == ["0100007F"]  # 127.0.0.1 only, no 0.0.0.0, no ::
    finally:
        proc.terminate()
        proc.wait(30)
