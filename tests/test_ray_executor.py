"""The Ray executor: same trees as the other executors, a killed actor fails only its branches,
an unreachable cluster address is one clear line. One local Ray (2 CPUs, no dashboard) for the
whole module, shut down at the end."""

from __future__ import annotations

import asyncio

import pytest

ray = pytest.importorskip("ray")

from tests.policy_fixtures import tiny_model  # noqa: E402, F401 - fixture
from tests.test_harness import TOY_TASKS, _canonical, _run, template  # noqa: E402, F401
from treegym.harness import (  # noqa: E402
    ChainSampler,
    InProcessExecutor,
    ProcessExecutor,
    Runner,
    Task,
    TreeGRPOSampler,
)
from treegym.harness.ray_executor import RayExecutor, RayUnavailableError  # noqa: E402
from treegym.policies import ScriptedPolicy  # noqa: E402

ENV = "treegym/ToyRooms-v0"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             object_store_memory=80 * 1024 * 1024)  # fmt: skip
    try:
        yield
    finally:
        ray.shutdown()


def test_seeded_runs_identical_in_process_pool_and_ray(template, local_ray):  # noqa: F811
    sampler = TreeGRPOSampler(m=2, n=2, l=1, k=3)
    a = _run(template, sampler, TOY_TASKS[:3], executor=InProcessExecutor(ENV))
    b = _run(template, sampler, TOY_TASKS[:3], executor=ProcessExecutor(ENV, n_workers=2))
    c = _run(template, sampler, TOY_TASKS[:3], executor=RayExecutor(ENV, n_workers=2))
    assert _canonical(a) and _canonical(a) == _canonical(b) == _canonical(c)
    # node ids follow completion order (timing); the advantage values per task do not
    assert [sorted(r.advantages["tree_grpo"].per_leaf.values()) for r in a] == [
        sorted(r.advantages["tree_grpo"].per_leaf.values()) for r in c
    ]
    assert ray.is_initialized()  # the executor did not shut down a Ray it did not start


class _KillingExecutor(RayExecutor):
    """Kills actor 1 (with ``ray.kill``) the first time a step is routed to it after
    ``after`` steps overall, i.e. mid-expansion."""

    def __init__(self, *args, after: int = 6, **kw):
        super().__init__(*args, **kw)
        self.after, self.steps, self.killed = after, 0, None

    async def step(self, state, action):
        self.steps += 1
        if self.killed is None and state.worker == 1 and self.steps >= self.after:
            self.killed = self.names[1]
            ray.kill(self.actors[1], no_restart=True)
            await _dead(self.actors[1])
        return await super().step(state, action)


async def _dead(actor, limit: int = 1000) -> None:
    """Return once ``actor`` answers a ping with its death (``ray.kill`` is asynchronous)."""
    for _ in range(limit):
        try:
            await actor.ping.remote()
        except ray.exceptions.RayActorError:
            return
    raise AssertionError("the killed actor still answers")


def _killed_run(template, **kw):  # noqa: F811
    tasks = [Task(f"toy-{i}", {"task": i}, seed=i) for i in range(4)]
    policy = ScriptedPolicy(template, "expert", epsilon=0.5, seed=3)

    async def go():
        ex = _KillingExecutor(ENV, n_workers=2, **kw)
        runner = Runner(policy=policy, template=template, executor=ex,
                        sampler=ChainSampler(3), concurrency=4)  # fmt: skip
        try:
            return ex, sorted([r async for r in runner.run(tasks)], key=lambda r: r.task.task_id)
        finally:
            await ex.close()

    return asyncio.run(go())


def test_killed_actor_is_replaced_and_the_run_is_unchanged(template, local_ray):  # noqa: F811
    ex, results = _killed_run(template)
    assert ex.killed == "treegym-env-1" and ex.respawns == 1
    tasks = [r.task for r in results]
    clean = _run(template, ChainSampler(3), tasks, executor=InProcessExecutor(ENV), concurrency=4)
    assert all(r.error is None for r in results)
    assert not [n.error for r in results for t in r.trees for n in t.nodes if n.error]
    assert _canonical(results) == _canonical(clean)


def test_killed_actor_without_respawns_fails_only_its_branches(template, local_ray):  # noqa: F811
    ex, results = _killed_run(template, max_respawns=0)
    assert ex.killed == "treegym-env-1"
    assert len(results) == 4  # the run completes
    for r in results[0::2]:  # tasks on actor 0 are untouched
        assert r.error is None
        assert not [n for t in r.trees for n in t.nodes if n.error]
    failed = [n.error for r in results[1::2] for t in r.trees for n in t.nodes if n.error]
    failed += [r.error for r in results[1::2] if r.error]
    assert failed, "the killed actor's branches must be recorded as failed"
    assert all("treegym-env-1" in e and "died" in e for e in failed), failed


def test_unreachable_address_is_one_clear_line():
    with pytest.raises(RayUnavailableError) as info:
        RayExecutor(ENV, n_workers=1, address="127.0.0.1:1", connect_timeout_s=3)
    text = str(info.value)
    assert "\n" not in text and "127.0.0.1:1" in text and "cannot reach" in text


def test_collect_with_ray_executor(tmp_path, local_ray):
    from typer.testing import CliRunner

    from treegym.cli import app
    from treegym.harness import load_run

    toy = ["collect", "--env", ENV, "-k", "max_episode_steps=8", "--policy",
           "scripted:expert:0.5", "--quiet", "--n-tasks", "2"]  # fmt: skip
    cli = CliRunner()
    out = tmp_path / "ray"
    res = cli.invoke(app, [*toy, "--executor", "ray", "--workers", "2", "--out", str(out)])
    assert res.exit_code == 0, res.stdout + res.stderr
    run = load_run(out)
    assert run.complete and len(run.samples) == 2 * 6
    assert run.manifest["collect"]["invocation"]["executor"] == "ray"
    bad = cli.invoke(app, [*toy, "--executor", "ray", "--ray-address", "127.0.0.1:1",
                           "--out", str(tmp_path / "bad")])  # fmt: skip
    assert bad.exit_code != 0
    lines = [ln for ln in (bad.stdout + bad.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot reach the Ray cluster at '127.0.0.1:1'" in lines[0], lines
