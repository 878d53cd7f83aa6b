"""``treegym collect`` runs that cannot produce anything say so: a policy that does not answer
is one line before anything runs, a run in which everything failed exits non-zero with its first
error, a failed task prints its reason, and task specs the env can check are refused before
workers start."""

from __future__ import annotations

from aiohttp import web

from tests.policy_fixtures import free_port, serve_app  # noqa: F401 - fixture
from tests.test_collect import TOY, collect
from treegym.harness import load_run

TOY_ENV = ["--env", "treegym/ToyRooms-v0", "-k", "max_episode_steps=4", "--workers", "0", "-q"]


def _one_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    return lines[0]


def test_a_policy_server_that_does_not_answer_is_one_line_before_the_run(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    res = collect(*TOY_ENV, "--policy", f"sglang:{url}", "--n-tasks", "1",
                  "--out", str(tmp_path / "run"))  # fmt: skip
    assert res.exit_code == 2, res.stdout + res.stderr
    line = _one_line(res)
    assert f"the SGLang server at {url} is not ready" in line and "Cannot connect" in line
    assert "complete" not in res.stdout and not (tmp_path / "run").exists()


def _refusing_engine():
    """An SGLang-protocol server that is up (health, model info) but refuses every request."""

    async def health(_):
        return web.Response(text="")

    async def model_info(_):
        return web.json_response({"model_path": "m"})

    async def generate(_):
        return web.Response(status=400, text="no weights")

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/model_info", model_info)
    app.router.add_post("/generate", generate)
    return app


def test_a_run_in_which_every_branch_failed_exits_1_with_the_first_error(serve_app, tmp_path):  # noqa: F811
    server = serve_app(_refusing_engine())
    out = tmp_path / "run"
    res = collect(*TOY_ENV, "--policy", f"sglang:{server.url}", "--sampler", "chain",
                  "-p", "group_size=2", "--n-tasks", "2", "--out", str(out))  # fmt: skip
    assert res.exit_code == 1, res.stdout + res.stderr
    line = _one_line(res)
    assert line.startswith("error: every branch failed (4); the first error: task 'toy-")
    assert "refused the request: HTTP 400: no weights" in line
    status = next(r for r in res.stdout.splitlines() if "│ status" in r)
    assert "failed: every branch failed" in status and "complete" not in status
    assert load_run(out).complete  # the folder itself is whole: the errors are in it


def test_a_failed_task_prints_its_reason(tmp_path):
    # ToyRooms has no validate_task: the bad task fails at reset, in the worker
    res = collect(*TOY, "--tasks", "bogus", "--out", str(tmp_path / "run"))
    assert res.exit_code == 1, res.stdout + res.stderr
    line = _one_line(res)
    assert "every task failed (1); the first error: task 'bogus':" in line
    assert "ToyRooms task must be a non-negative int or 'toy-<n>', got 'bogus'" in line
    assert "failed: every task failed" in res.stdout


def test_task_specs_are_validated_before_workers_start(tmp_path):
    res = collect("--env", "treegym/ALFWorld-v0", "--tasks", "nonsense:seed=1",
                  "--policy", "scripted:random", "--out", str(tmp_path / "run"))  # fmt: skip
    assert res.exit_code == 2, res.stdout + res.stderr
    line = _one_line(res)
    assert "task 'nonsense:seed=1': unknown ALFWorld task type 'nonsense'; choose one of " in line
    assert "pick_and_place_simple" in line and not (tmp_path / "run").exists()
    res = collect("--tasks", "/nonexistent/game.z8", "--out", str(tmp_path / "run"))
    assert res.exit_code == 2 and "game file not found: /nonexistent/game.z8" in _one_line(res)
