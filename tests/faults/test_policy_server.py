"""The policy server misbehaving for a share of requests during a real collection into a run
folder: 5xx answers, hangs past the client's timeout, dropped connections (retried with
backoff: the run completes, identical to an unfaulted one), malformed JSON and a server that
goes down for good (not retried / retries exhausted: the branches fail with an error naming the
server, every task is still written and loadable)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from aiohttp import web

from tests.faults.conftest import TIMING, record, rows_in_memory, rows_on_disk
from tests.policy_fixtures import faulty_generate_app, serve_app, tiny_model  # noqa: F401
from treegym.harness import ChainSampler, InProcessExecutor, Runner, Task, load_run
from treegym.harness.collect import collect
from treegym.policies import SamplingParams
from treegym.policies.hf import HFPolicy
from treegym.policies.server import make_app
from treegym.policies.sglang import SGLangPolicy

TASKS = [Task(f"toy-{i}", {"task": i}, seed=i) for i in range(4)]


def _faulty_app(real: web.Application, plan):
    """``plan(n)`` says what the n-th /generate call gets: None (the real answer) or a fault;
    a hang lasts until the client's 1.5 s timeout has made it disconnect. Returns the app and
    the call numbers it has seen."""
    return faulty_generate_app(real, plan, hang_s=None)


def _collect(url, template, out, on_result=None):
    async def go():
        policy = SGLangPolicy(url, retries=3, backoff_s=0.01, timeout_s=1.5)
        runner = Runner(policy=policy, template=template, executor=InProcessExecutor(
            "treegym/ToyRooms-v0", {"max_episode_steps": 4}), sampler=ChainSampler(2),
            sampling=SamplingParams(max_new_tokens=24), concurrency=2, seed=0)  # fmt: skip
        await collect(
            runner, TASKS, out, on_result=None if on_result is None else lambda e, r: on_result(r)
        )

    asyncio.run(go())
    return load_run(out)


def _canonical(run):
    """Everything but timings and engine-side figures: cached tokens (a retried prompt is a
    prefix-cache hit), restores (which env state a worker is at depends on timing) and
    logprobs (a cache hit changes them in the last float digits; compared approximately)."""
    skip = ("cached", "logprob", "restores")
    nodes = run.nodes.drop(columns=[*TIMING, *(c for c in run.nodes if any(k in c for k in skip))])
    samples = run.samples.drop(
        columns=["run_id", *(c for c in run.samples if any(k in c for k in skip))]
    )
    nodes = nodes.sort_values(["task_id", "tree_index", "node_id"])
    return nodes.to_json(orient="records"), samples.sort_values("sample_id").to_json(
        orient="records"
    )


def _logprobs(run):
    nodes = run.nodes.sort_values(["task_id", "tree_index", "node_id"])
    return np.concatenate([np.asarray(x, dtype=float) for x in nodes.logprobs])


@pytest.fixture(scope="module")
def hf(tiny_model):  # noqa: F811
    return HFPolicy(tiny_model)


@pytest.fixture
def template(hf):
    from treegym.policies import ReActTemplate

    return ReActTemplate(hf.tokenizer)


MODES = ["5xx", "hang", "drop"]


def test_transient_faults_are_retried_and_the_run_is_identical(hf, template, serve_app, tmp_path):  # noqa: F811
    clean = _collect(serve_app(make_app(hf)).url, template, tmp_path / "clean")
    # every fifth call faults (rotating 5xx / hang / drop); a retry is a new call, so it passes
    app, calls = _faulty_app(make_app(hf), lambda n: MODES[(n // 5) % 3] if n % 5 == 0 else None)
    faulty = _collect(serve_app(app).url, template, tmp_path / "faulty")
    expected, found = rows_on_disk(clean), rows_on_disk(faulty)
    identical = _canonical(faulty) == _canonical(clean)
    record("policy server 5xx/timeout/drop (share)", ok=faulty.complete and identical,
           expected=expected, found=found)  # fmt: skip
    assert len(calls) >= 15, "fewer than one fault of each kind was served"
    assert faulty.complete and sorted(faulty.task_ids) == sorted(clean.task_ids)
    errors = faulty.nodes.error.dropna()
    assert (errors == "").all(), errors[errors != ""].tolist()[:2]
    assert identical
    assert np.allclose(_logprobs(faulty), _logprobs(clean), atol=1e-4)
    assert found == expected


@pytest.mark.parametrize("mode", ["garbage", "5xx"])
def test_persistent_faults_fail_branches_naming_the_server(hf, template, serve_app, tmp_path, mode):  # noqa: F811
    # healthy for the first calls, then the fault for good (garbage: every 4th call)
    plan = (lambda n: "garbage" if n % 4 == 0 else None) if mode == "garbage" else (
        lambda n: "5xx" if n > 6 else None)  # fmt: skip
    server = serve_app(_faulty_app(make_app(hf), plan)[0])
    results = []
    run = _collect(server.url, template, tmp_path / "run", on_result=results.append)
    expected, found = rows_in_memory(results), rows_on_disk(run)
    errors = run.nodes.error.dropna()
    errors = errors[errors != ""]
    record(f"policy server {'malformed JSON' if mode == 'garbage' else 'down for good'}",
           ok=run.complete and len(errors) > 0, expected=expected, found=found)  # fmt: skip
    assert run.complete and len(run.task_ids) == len(TASKS)  # every task on disk, loadable
    assert len(errors) > 0 and all(server.url in e for e in errors), errors.tolist()[:3]
    want = "not JSON" if mode == "garbage" else "failed after 3 attempts"
    assert all(want in e for e in errors), errors.tolist()[:3]
    assert found == expected
