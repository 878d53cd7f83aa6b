"""Streaming, crash-safe export of task results into a run folder.

Layout of ``RUN/`` (columns: :mod:`~treegym.harness.schema`)::

    manifest.json        format, schema version, run id, identity (config, sampler, policy,
                         tokenizer), package versions; after finalize: rows, budget, status
    ledger.jsonl         one line per finished task (appended and fsync'd *after* its parts)
    .writer.lock         flock held by the one RunWriter allowed at a time
    parts/NNNNNN.nodes.parquet, parts/NNNNNN.samples.parquet
                         one pair per group commit not yet compacted, named by the group's
                         first task (its ledger entries give ``part`` and ``part_offsets``)
    nodes.parquet, samples.parquet
                         compacted by finalize(): whole tasks per row group, ~64 MiB each

Why this order of writes: a task counts as finished only when its ledger line is on disk, and
that line is written after both part files were fsync'd and renamed into place. Tasks are
written in group commits (:meth:`RunWriter.write_group`): the parts of several tasks are
fsync'd in one round and their ledger lines appended with one fsync, so the fsyncs are paid
per group, not per task; a task is acknowledged (its entry returned) only once its line is
durable. A crash (or
Ctrl-C, or SIGKILL) at any point therefore leaves every earlier task intact and readable, and
at most one half-written task whose parts have no ledger line — ``resume`` removes those, so a
resumed run has no duplicates. A torn last ledger line (killed mid-append) is the same case.

``finalize()`` streams the parts into ``nodes.parquet``/``samples.parquet`` with a
``ParquetWriter`` (at most one row group in memory), writes all three final files to temporary
names, then drops a ``FINALIZING`` marker and renames them; a crash during the renames is
rolled forward the next time the folder is opened for writing. Parts are deleted only after.

Driving it from the runner::

    with RunWriter.for_runner(RUN, runner, config={"env": env_id}, resume=True) as writer:
        todo = [t for t in tasks if t.task_id not in writer.finished]
        async for result in runner.run(todo):
            writer.write(result)
    # leaving the block normally calls finalize(); an exception leaves the parts for resume
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import functools
import hashlib
import json
import os
import platform
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from .advantages import ESTIMATORS
from .budget import Budget
from .pause import pause_point
from .rows import ExportError, Turns, json_default, nodes_table, samples_table
from .schema import (
    DICTIONARY_COLUMNS,
    FORMAT,
    NODES_SCHEMA,
    SCHEMA_VERSION,
    samples_schema,
)

if TYPE_CHECKING:
    from .runner import Runner, TaskResult

MANIFEST = "manifest.json"
LEDGER = "ledger.jsonl"
PARTS = "parts"
NODES = "nodes.parquet"
SAMPLES = "samples.parquet"
FINALIZING = "FINALIZING"
SHARDS = "shards"
"""Per-driver run folders of a sharded collection (:mod:`~treegym.harness.shards`)."""
LOCK = ".writer.lock"
KEEP_BYTES = 256 << 20
"""Arrow bytes of committed tasks a writer keeps for its ``finalize`` (the rest is read back)."""
ROW_GROUP_BYTES = 64 << 20
"""Target in-memory size of one compacted row group (whole tasks are gathered up to it)."""
_PACKAGES = ("treegym", "pyarrow", "pandas", "numpy", "torch", "transformers", "tokenizers",
             "datasets", "gymnasium", "textworld")  # fmt: skip


class RunMismatchError(ExportError):
    """The folder holds a run with a different identity (config, sampler, policy, tokenizer)."""


# ---------------------------------------------------------------------- file helpers
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _parquet_options(schema: pa.Schema) -> dict[str, Any]:
    return {
        "compression": "zstd",
        "use_dictionary": [c for c in DICTIONARY_COLUMNS if c in schema.names],
        "write_page_checksum": True,
        "write_statistics": ["run_id", "task_id", "tree_index", "node_id", "leaf_id"],
    }


def file_digest(path: Path) -> dict[str, Any]:
    """Size and SHA-256 of a file (read in chunks): what the ledger and manifest record, so a
    reader detects any changed byte, not only those Parquet's page checksums cover."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": h.hexdigest()}


PART_OPTIONS: dict[str, Any] = {"compression": "lz4", "use_dictionary": False,
                                "write_statistics": False, "write_page_checksum": True}  # fmt: skip
"""Parts live until ``finalize`` re-encodes their rows (zstd, dictionaries, statistics): they
are written for speed (dictionary encoding a task's small table costs 3x its lz4 encoding and
saves nothing measurable here) and keep page checksums (``load_run`` reads unfinished runs)."""


def _parquet_bytes(table: pa.Table) -> bytes:
    """``table`` as a part file of one row group."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=max(1, table.num_rows), **PART_OPTIONS)
    return sink.getvalue().to_pybytes()


def _fsync_round(handles: Sequence[Any], pool: ThreadPoolExecutor) -> None:
    """fsync every open file at once: the file system commits them together (one journal
    round for the lot; fsyncing them one after another costs one round each)."""
    for future in [pool.submit(os.fsync, fh.fileno()) for fh in handles]:
        future.result()


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (dataclasses → dicts, tuples → lists, others → str)."""
    return json.loads(json.dumps(value, sort_keys=True, default=json_default))


def _comparable(value: Any) -> Any:
    """Identity without file-system locations: the same model at another path is the same."""
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items() if "path" not in k}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".") or "(root)"]


# ---------------------------------------------------------------------- identities
def tokenizer_identity(tokenizer: Any) -> dict[str, Any]:
    """Class, vocabulary digest and special ids of a Hugging Face tokenizer."""
    if tokenizer is None:
        return {}
    vocab = sorted(tokenizer.get_vocab().items())
    digest = hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]
    return {
        "class": type(tokenizer).__name__,
        "name_or_path": str(getattr(tokenizer, "name_or_path", "")),
        "vocab_size": len(vocab),
        "vocab_sha256": digest,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def sampler_identity(sampler: Any) -> dict[str, Any]:
    if sampler is None:
        return {}
    fields = dataclasses.asdict(sampler) if dataclasses.is_dataclass(sampler) else {}
    return {"class": type(sampler).__name__, "name": getattr(sampler, "name", ""), **fields}


def package_versions() -> dict[str, str]:
    """Versions of the packages a run's rows depend on (a fresh dict each call)."""
    return dict(_installed_versions())


@functools.cache
def _installed_versions() -> tuple[tuple[str, str], ...]:
    """Looked up once per process: ``importlib.metadata`` parses every package's metadata
    file (≈15 ms here), and a writer asks at open and again at finalize."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return tuple(out.items())


def runner_config(runner: Runner) -> dict[str, Any]:
    """The settings of a runner that change what it samples (not concurrency)."""
    t = runner.template
    return {
        "sampling": dataclasses.asdict(runner.sampling),
        "context_length": runner.context_length,
        "token_budget": runner.token_budget,
        "seed": runner.seed,
        "template": {
            "class": type(t).__name__,
            "system_prompt": t.system_prompt,
            "show_admissible": t.show_admissible,
            "tidy": t.tidy,
        },
        "executor": type(runner.executor).__name__,
    }


# ---------------------------------------------------------------------- ledger
def read_ledger(run: Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """Finished tasks in order. A torn last line (a kill mid-append) is not a finished task: it
    is ignored, and with ``repair`` cut off the file. A broken line before it is corruption."""
    path = run / LEDGER
    if not path.exists():
        return []
    data = path.read_bytes()
    complete, _, torn = data.rpartition(b"\n")
    if torn and repair:
        with open(path, "r+b") as fh:
            fh.truncate(len(complete) + (1 if complete else 0))
            fh.flush()
            os.fsync(fh.fileno())
    entries = []
    for number, line in enumerate(complete.split(b"\n") if complete else [], 1):
        try:
            entry = json.loads(line)
            if not isinstance(entry.get("task_id"), str) or not isinstance(entry.get("seq"), int):
                raise ValueError("no task_id/seq")
        except (ValueError, AttributeError) as exc:
            raise ExportError(f"{path}: line {number} is not a ledger entry ({exc})") from exc
        entries.append(entry)
    return entries


def part_paths(run: Path, seq: int) -> tuple[Path, Path]:
    """The nodes and samples part files named ``seq``: the first task of their group commit."""
    return run / PARTS / f"{seq:06d}.nodes.parquet", run / PARTS / f"{seq:06d}.samples.parquet"


def entry_part(entry: Mapping[str, Any]) -> int:
    """Which part files hold a ledger entry's rows (entries written before group files
    existed hold their own: the entry's ``seq``)."""
    return int(entry.get("part", entry["seq"]))


def part_groups(entries: Sequence[dict[str, Any]]) -> list[tuple[int, list[dict[str, Any]]]]:
    """Consecutive ledger entries that share part files (one group commit each), in order:
    a part file holds its group's tasks' rows one task after another."""
    groups: list[tuple[int, list[dict[str, Any]]]] = []
    for entry in entries:
        part = entry_part(entry)
        if groups and groups[-1][0] == part:
            groups[-1][1].append(entry)
        else:
            groups.append((part, [entry]))
    return groups


def group_rows(part: Path, members: Sequence[dict[str, Any]], key: str, rows: int) -> str | None:
    """What is wrong when part file ``part`` holds ``rows`` rows of its group's ``key`` table
    (None when they are the rows the ledger lists)."""
    listed = sum(int(e[key]) for e in members)
    if rows == listed:
        return None
    ids = [e["task_id"] for e in members]
    tasks = f"task {ids[0]!r}" if len(ids) == 1 else f"tasks {ids[0]!r}..{ids[-1]!r}"
    return f"{part}: {rows} rows, the ledger says {listed} ({tasks})"


def read_manifest(run: Path) -> dict[str, Any] | None:
    path = run / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ExportError(f"{path}: not a JSON object")
    return manifest


# ---------------------------------------------------------------------- the writer
@dataclass(frozen=True)
class StagedTask:
    """A finished task's rows, built and not yet written (:meth:`RunWriter.stage`)."""

    task_id: str
    node_rows: int
    sample_rows: int
    error: str | None
    budget: dict[str, Any]
    tables: tuple[pa.Table, pa.Table]
    """The rows themselves: kept for ``finalize`` after the commit (no reading back)."""


class RunWriter:
    """Writes one run folder; see the module docstring for the layout and the guarantees.

    ``resume=False`` needs a new or empty folder; ``resume=True`` continues the run already
    there (``finished`` holds its done task ids) and refuses a folder holding a run with another
    identity unless ``force=True``. A non-empty folder that is not a run is always refused.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        config: Mapping[str, Any] | None = None,
        sampler: Any = None,
        policy: Any = None,
        tokenizer: Any = None,
        estimators: Sequence[str] | None = None,
        resume: bool = False,
        force: bool = False,
        run_id: str | None = None,
    ) -> None:
        """``run_id``: the id a new run gets (default: a fresh one); shards of one run share
        their run's id (:mod:`~treegym.harness.shards`)."""
        self.path = Path(path)
        self._pool: ThreadPoolExecutor | None = None
        self._kept: OrderedDict[int, tuple[pa.Table, pa.Table]] = OrderedDict()
        self._kept_bytes = 0
        if estimators is None:
            estimators = getattr(sampler, "estimators", None) or tuple(ESTIMATORS)
        self.estimators = list(estimators)
        identity = _jsonable({
            "config": dict(config or {}),
            "sampler": sampler_identity(sampler),
            "estimators": self.estimators,
            "policy": policy.identity() if policy is not None else {},
            "tokenizer": tokenizer_identity(tokenizer),
        })  # fmt: skip
        manifest = self._open_folder(resume)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock = _lock(self.path / LOCK)
        except OSError as exc:
            raise ExportError(f"cannot open run folder {self.path}: {exc.strerror or exc}") from exc
        try:  # a refused folder must not stay locked until garbage collection
            if manifest is not None:
                self._roll_forward_finalize()
                manifest = read_manifest(self.path) or manifest
            if manifest is None:
                self.manifest: dict[str, Any] = {
                    "format": FORMAT,
                    "schema_version": SCHEMA_VERSION,
                    "run_id": run_id or uuid.uuid4().hex[:12],
                    "created": _now(),
                    "status": "collecting",
                    "compacted": 0,
                    **identity,
                    "versions": package_versions(),
                }
            else:
                mine = {k: manifest.get(k) for k in identity}
                diff = _diff_keys(_comparable(mine), _comparable(identity))
                if diff and not force:
                    raise RunMismatchError(
                        f"{self.path / MANIFEST} holds another run "
                        f"(differs in: {', '.join(diff)}); "
                        "use a new folder, or force=True to continue it anyway"
                    )
                self.estimators = list(manifest.get("estimators") or self.estimators)
                manifest["status"] = "collecting"
                if diff:
                    manifest.setdefault("forced_resumes", []).append(
                        {"time": _now(), "differs": diff}
                    )
                self.manifest = manifest
            (self.path / PARTS).mkdir(exist_ok=True)
            self._write_manifest()
            self._ledger = read_ledger(self.path, repair=True)
            self._remove_unfinished_parts()
            self.finished: set[str] = {e["task_id"] for e in self._ledger}
            """Task ids already written (skip them when resuming)."""
        except OSError as exc:
            self.close()
            raise ExportError(f"cannot open run folder {self.path}: {exc.strerror or exc}") from exc
        except BaseException:
            self.close()
            raise

    @classmethod
    def for_runner(
        cls,
        path: str | Path,
        runner: Runner,
        *,
        config: Mapping[str, Any] | None = None,
        resume: bool = False,
        force: bool = False,
        run_id: str | None = None,
    ) -> RunWriter:
        """A writer whose identity is ``runner``'s settings, sampler, policy and tokenizer plus
        ``config`` (put what the runner does not know here, e.g. the env id and its kwargs)."""
        return cls(
            path,
            config={**runner_config(runner), **dict(config or {})},
            sampler=runner.sampler,
            policy=runner.policy,
            tokenizer=runner.template.tokenizer,
            resume=resume,
            force=force,
            run_id=run_id,
        )

    # ------------------------------------------------------------------ opening
    def _open_folder(self, resume: bool) -> dict[str, Any] | None:
        if self.path.exists() and not self.path.is_dir():
            raise ExportError(f"{self.path} is a file, not a run folder")
        if not self.path.exists() or not any(p.name != LOCK for p in self.path.iterdir()):
            return None
        manifest = read_manifest(self.path)
        if manifest is None or manifest.get("format") != FORMAT:
            raise ExportError(
                f"{self.path} is not empty and is not a treegym run folder "
                f"(no {MANIFEST} with format {FORMAT!r}); refusing to write into it"
            )
        version = manifest.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ExportError(
                f"{self.path / MANIFEST}: schema_version {version!r} is not one this treegym "
                f"writes (<= {SCHEMA_VERSION}); upgrade treegym to continue this run"
            )
        if not resume:
            raise ExportError(
                f"{self.path} already holds a run ({manifest.get('run_id')}); pass resume=True "
                "to continue it, or choose a new folder"
            )
        return manifest

    def _roll_forward_finalize(self) -> None:
        """Complete renames a crash interrupted (the marker is written after the tmp files)."""
        marker = self.path / FINALIZING
        if marker.exists():
            for name in (NODES, SAMPLES, MANIFEST):
                tmp = self.path / f"{name}.final.tmp"
                if tmp.exists():
                    os.replace(tmp, self.path / name)
            _fsync_dir(self.path)
            marker.unlink()
        for tmp in self.path.glob("*.tmp"):
            tmp.unlink()

    def _remove_unfinished_parts(self) -> None:
        listed = {entry_part(e) for e in self._ledger[self.compacted :]}
        keep = {p.name for part in listed for p in part_paths(self.path, part)}
        for f in (self.path / PARTS).iterdir():
            if f.name not in keep:
                f.unlink()

    @property
    def compacted(self) -> int:
        """Ledger entries already in ``nodes.parquet``/``samples.parquet``."""
        return int(self.manifest.get("compacted", 0))

    def _write_manifest(self) -> None:
        _write_atomic(self.path / MANIFEST, _manifest_bytes(self.manifest))

    # ------------------------------------------------------------------ writing
    def _disk_error(self, doing: str, exc: OSError) -> ExportError:
        """A full disk or an unwritable folder as one clear line (what is safe, what to do)."""
        return ExportError(
            f"cannot {doing} in {self.path}: {exc.strerror or exc}; the "
            f"{len(self._ledger)} task(s) finished before it are intact - free space or "
            "fix permissions, then resume (treegym collect --resume)"
        )

    def write(self, result: TaskResult) -> dict[str, Any]:
        """Write one finished task durably; return its ledger entry."""
        return self.write_group([result])[0]

    def write_group(self, results: Sequence[TaskResult]) -> list[dict[str, Any]]:
        """Write several finished tasks durably in one commit; return their ledger entries,
        in order: :meth:`stage` then :meth:`commit`."""
        return self.commit(self.stage(results))

    def stage(self, results: Sequence[TaskResult]) -> list[StagedTask]:
        """The tasks' rows as arrow tables, in memory (the Python half of a write: a collector
        runs it as tasks finish and hands the encoding and the disk to a thread)."""
        run_id = self.manifest["run_id"]
        out = []
        for result in results:
            turns = Turns.of(result.task.task_id, result.trees)
            nodes = nodes_table(result, run_id, turns)
            samples = samples_table(result, run_id, self.estimators, turns)
            out.append(StagedTask(result.task.task_id, nodes.num_rows, samples.num_rows,
                                  result.error, dataclasses.asdict(result.budget),
                                  (nodes, samples)))  # fmt: skip
        return out

    def commit(self, staged: Sequence[StagedTask]) -> list[dict[str, Any]]:
        """Make staged tasks durable in one group commit; return their ledger entries.

        The group's rows are encoded as one nodes and one samples part file (named by the
        group's first task; each ledger entry says where its rows start), both fsync'd in one
        round, renamed into place, the parts folder fsync'd once, and the group's ledger lines
        appended in one write with one fsync — so a task costs its share of two files and four
        fsync rounds, not files and fsyncs of its own (a part file's fixed cost, encoding and
        opening, was most of a small task's write). The guarantee is the single task's: a task
        is finished when its ledger line is durable, which is when this returns (its entry is
        the acknowledgement); a crash before that leaves the earlier groups intact and at most
        this group's unlisted parts, which ``resume`` removes."""
        if not staged:
            return []
        try:
            return self._commit(staged)
        except OSError as exc:
            more = f" (+{len(staged) - 1} more)" if len(staged) > 1 else ""
            raise self._disk_error(f"write task {staged[0].task_id!r}{more}", exc) from exc

    def _commit(self, staged: Sequence[StagedTask]) -> list[dict[str, Any]]:
        ids = [t.task_id for t in staged]
        again = next((t for i, t in enumerate(ids) if t in self.finished or t in ids[:i]), None)
        if again is not None:
            raise ExportError(
                f"task {again!r} is already in {self.path / LEDGER}; skip finished tasks "
                "(RunWriter.finished) instead of writing them twice"
            )
        first = self._ledger[-1]["seq"] + 1 if self._ledger else 0
        tables = [pa.concat_tables([t.tables[k] for t in staged]) for k in (0, 1)]
        files, moves, handles = {}, [], []
        try:
            for name, table, path in zip(("nodes", "samples"), tables, part_paths(self.path, first),
                                         strict=True):  # fmt: skip
                data = _parquet_bytes(table)
                files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                tmp = path.with_name(path.name + ".tmp")
                handles.append(open(tmp, "wb"))  # noqa: SIM115 - closed below
                handles[-1].write(data)
                handles[-1].flush()
                moves.append((tmp, path))
            _fsync_round(handles, self._io_pool())
        finally:
            for fh in handles:
                fh.close()
        entries, at = [], {"nodes": 0, "samples": 0}
        for seq, task in enumerate(staged, first):
            entries.append({
                "seq": seq, "task_id": task.task_id, "nodes": task.node_rows,
                "samples": task.sample_rows, "part": first, "part_offsets": dict(at),
                "files": files, "error": task.error, "budget": task.budget, "time": _now(),
            })  # fmt: skip
            at["nodes"] += task.node_rows
            at["samples"] += task.sample_rows
        for tmp, path in moves:
            os.replace(tmp, path)
            if path.name.endswith(".nodes.parquet"):  # the nodes part is in place, samples not
                pause_point("part-write")
        _fsync_dir(self.path / PARTS)
        lines = "".join(json.dumps(e, sort_keys=True, default=json_default) + "\n"
                        for e in entries)  # fmt: skip
        with open(self.path / LEDGER, "ab") as fh:
            fh.write(lines.encode())
            fh.flush()
            pause_point("group-commit")
            os.fsync(fh.fileno())
        self._ledger.extend(entries)
        self.finished.update(ids)
        for entry, task in zip(entries, staged, strict=True):
            self._keep(entry["seq"], task.tables)
        return entries

    def _keep(self, seq: int, tables: tuple[pa.Table, pa.Table]) -> None:
        """Remember a committed task's tables for ``finalize`` (oldest dropped past
        ``KEEP_BYTES``: those are read back from their parts)."""
        self._kept[seq] = tables
        self._kept_bytes += sum(t.nbytes for t in tables)
        while self._kept_bytes > KEEP_BYTES and self._kept:
            _, old = self._kept.popitem(last=False)
            self._kept_bytes -= sum(t.nbytes for t in old)

    def adopt(self, folder: Path, entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Take finished tasks of another folder of this run (a shard) into this one, in one
        group commit: their part files are hard-linked (the bytes their ledger digests cover),
        their ledger lines renumbered and appended. Tasks this folder holds are refused."""
        again = next((e["task_id"] for e in entries if e["task_id"] in self.finished), None)
        if again is not None:
            raise ExportError(f"task {again!r} is already in {self.path / LEDGER}")
        first = self._ledger[-1]["seq"] + 1 if self._ledger else 0
        adopted, renamed = [], {}  # a shard's part -> its name here (its first task's seq)
        try:
            for seq, entry in enumerate(entries, first):
                part = entry_part(entry)
                if part not in renamed:
                    renamed[part] = seq
                    for src, dst in zip(part_paths(folder, part), part_paths(self.path, seq),
                                        strict=True):  # fmt: skip
                        dst.unlink(missing_ok=True)  # an unlisted part of an interrupted adoption
                        os.link(src, dst)
                adopted.append({**entry, "seq": seq, "part": renamed[part]})
            _fsync_dir(self.path / PARTS)
            lines = "".join(json.dumps(e, sort_keys=True, default=json_default) + "\n"
                            for e in adopted)  # fmt: skip
            with open(self.path / LEDGER, "ab") as fh:
                fh.write(lines.encode())
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise self._disk_error(f"adopt the tasks of {folder}", exc) from exc
        self._ledger.extend(adopted)
        self.finished.update(e["task_id"] for e in adopted)
        return adopted

    def _io_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="treegym-io")
        return self._pool

    def write_all(self, results: Iterable[TaskResult], group: int = 64) -> None:
        """Write ``results`` in group commits of up to ``group`` tasks."""
        batch: list[TaskResult] = []
        for result in results:
            batch.append(result)
            if len(batch) >= group:
                self.write_group(batch)
                batch = []
        self.write_group(batch)

    # ------------------------------------------------------------------ finalize
    def finalize(self, row_group_bytes: int = ROW_GROUP_BYTES) -> dict[str, Any]:
        """Compact the parts into ``nodes.parquet``/``samples.parquet`` and complete the
        manifest; return it. Memory stays bounded: whole tasks are gathered into one row group
        until it holds ``row_group_bytes`` of arrow data (a task is never split across row
        groups; ``1`` gives one row group per task). Tasks this writer committed come from
        memory (up to ``KEEP_BYTES``); every part read back is checked against its ledger
        digest first, so a file damaged after it was written is not copied silently."""
        try:
            return self._finalize(row_group_bytes)
        except OSError as exc:
            raise self._disk_error("finalize the run", exc) from exc

    def _finalize(self, row_group_bytes: int) -> dict[str, Any]:
        new = self._ledger[self.compacted :]
        schemas = {NODES: NODES_SCHEMA, SAMPLES: samples_schema(self.estimators)}
        rows = dict(self.manifest.get("rows") or {NODES: 0, SAMPLES: 0})
        files = {}
        for which, (name, schema) in enumerate(schemas.items()):
            rows[name] += self._compact(name, which, schema, new, row_group_bytes)
            files[name] = file_digest(self.path / f"{name}.final.tmp")
            if which == 0:
                pause_point("finalize-compact")
        total = Budget()
        for entry in self._ledger:
            total += Budget(**entry["budget"])
        manifest = {
            **self.manifest,
            "status": "complete",
            "compacted": len(self._ledger),
            "finalized": _now(),
            "tasks": len(self._ledger),
            "failed_tasks": [e["task_id"] for e in self._ledger if e.get("error")],
            "rows": rows,
            "files": files,
            "budget": total.as_dict(),
            "versions": package_versions(),
        }
        tmp = self.path / f"{MANIFEST}.final.tmp"
        with open(tmp, "wb") as fh:
            fh.write(_manifest_bytes(manifest))
            fh.flush()
            os.fsync(fh.fileno())
        _write_atomic(self.path / FINALIZING, b"renaming *.final.tmp into place\n")
        for name in (NODES, SAMPLES, MANIFEST):
            os.replace(self.path / f"{name}.final.tmp", self.path / name)
            if name == NODES:
                pause_point("finalize-rename")
        _fsync_dir(self.path)
        (self.path / FINALIZING).unlink()
        self.manifest = manifest
        self._kept.clear()
        self._kept_bytes = 0
        parts = [p for part, _ in part_groups(new) for p in part_paths(self.path, part)]
        list(self._io_pool().map(lambda p: p.unlink(missing_ok=True), parts))
        return manifest

    def _compact(
        self,
        name: str,
        which: int,
        schema: pa.Schema,
        new: list[dict[str, Any]],
        row_group_bytes: int,
    ) -> int:
        """Write ``name.final.tmp``: the compacted row groups, then the ``new`` parts gathered
        into row groups of about ``row_group_bytes``; return the rows added."""
        added = 0
        with open(self.path / f"{name}.final.tmp", "wb") as fh:
            writer = pq.ParquetWriter(fh, schema, **_parquet_options(schema))
            try:
                if self.compacted:
                    old = pq.ParquetFile(self.path / name)
                    for i in range(old.num_row_groups):
                        group = old.read_row_group(i)
                        writer.write_table(group, row_group_size=max(1, group.num_rows))
                pending: list[pa.Table] = []
                size = 0
                for k, part in enumerate(self._read_parts(new, which)):
                    added += part.num_rows
                    if part.num_rows:
                        pending.append(part)
                        size += part.nbytes
                    if pending and (size >= row_group_bytes or k == len(new) - 1):
                        group = pa.concat_tables(pending)
                        writer.write_table(group, row_group_size=max(1, group.num_rows))
                        pending, size = [], 0
            finally:
                writer.close()
            fh.flush()
            os.fsync(fh.fileno())
        return added

    def _read_parts(self, entries: list[dict[str, Any]], which: int) -> Iterable[pa.Table]:
        """Each entry's rows in order: from memory when this writer committed it, else from
        its group's part file, checked and read a few files ahead in the writer's threads
        (reading releases the GIL; a file's fixed cost is mostly waiting)."""
        pool, ahead = self._io_pool(), 16
        groups = part_groups(entries)

        def fetch(group: tuple[int, list[dict[str, Any]]]) -> Any:
            part, members = group
            kept = [self._kept.get(e["seq"]) for e in members]
            if all(k is not None for k in kept):  # committed by this writer: in memory
                return [k[which] for k in kept]
            return pool.submit(self._read_group, part, members, which)

        futures = [fetch(g) for g in groups[:ahead]]
        for k in range(len(groups)):
            if k + ahead < len(groups):
                futures.append(fetch(groups[k + ahead]))
            got = futures[k]
            yield from got if isinstance(got, list) else got.result()
            futures[k] = None  # drop the tables once written

    def _read_group(self, part: int, members: list[dict[str, Any]], which: int) -> list[pa.Table]:
        """The rows of each of ``members`` from their group's part file (digest checked)."""
        path, key = part_paths(self.path, part)[which], ("nodes", "samples")[which]
        recorded = (members[0].get("files") or {}).get(key)
        if recorded and file_digest(path) != recorded:
            raise ExportError(
                f"{path}: differs from the size/SHA-256 {LEDGER} recorded for task "
                f"{members[0]['task_id']!r}; the part was damaged after it was written"
            )
        table = pq.read_table(path, page_checksum_verification=True)
        wrong = group_rows(path, members, key, table.num_rows)
        if wrong:
            raise ExportError(wrong)
        out, at = [], 0
        for entry in members:
            out.append(table.slice(at, entry[key]))
            at += entry[key]
        return out

    def record(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` in the manifest, written to disk atomically now."""
        self.manifest[key] = value
        self._write_manifest()

    def close(self) -> None:
        """Release the folder's writer lock (finished tasks are already on disk)."""
        if getattr(self, "_pool", None) is not None:
            self._pool.shutdown()
            self._pool = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                self.finalize()
        finally:
            self.close()


def _lock(path: Path) -> Any:
    """An exclusive lock on the run folder for this writer's lifetime: two collectors
    appending to one ledger would write the same task twice. The kernel drops it when the
    process dies, so a killed collector never leaves the folder locked."""
    import fcntl

    fh = open(path, "a+b")  # noqa: SIM115 - held open for the writer's lifetime
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        fh.close()
        raise ExportError(
            f"{path.parent} is being written by another RunWriter (lock {path.name} is held)"
        ) from exc
    return fh


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True, default=json_default) + "\n").encode()
