"""``treegym collect``: the front door, through typer's runner (fast settings: ToyRooms and a
scripted policy, envs in-process) — runs, config files, reuse from a manifest, resume after an
interruption, --force, and every bad input giving one line and exit 2."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from treegym.cli import app
from treegym.config import CollectConfig, ConfigError, resolve_config, task_list
from treegym.envs.alfworld_files import TASK_TYPES
from treegym.harness import collect as collect_mod
from treegym.harness import load_run

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
TOY = ["--env", "treegym/ToyRooms-v0", "-k", "max_episode_steps=8", "--policy",
       "scripted:expert:0.5", "--workers", "0", "--quiet"]  # fmt: skip


def collect(*args: str, **kw):
    return runner.invoke(app, ["collect", *args], terminal_width=200, **kw)


def _canonical(run) -> tuple[str, str]:
    timing = ["run_id", "policy_s", "env_s", "restore_s", "snapshot_s"]
    nodes = run.nodes.drop(columns=timing).sort_values(["task_id", "tree_index", "node_id"])
    samples = run.samples.drop(columns=["run_id"]).sort_values("sample_id")
    return nodes.to_json(orient="records"), samples.to_json(orient="records")


def test_collect_toy_run_prints_the_summary_and_writes_the_folder(tmp_path):
    out = tmp_path / "run"
    res = collect(*TOY, "--n-tasks", "3", "--out", str(out))
    assert res.exit_code == 0, res.stdout + res.stderr
    for word in ("leaves (training)", "distinct trajectories", "success rate",
                 "zero-variance groups", "chain-baseline estimate", "wall time",
                 "samples.parquet", "report.html"):  # fmt: skip
        assert word in res.stdout, word
    run = load_run(out)
    assert run.complete and sorted(run.task_ids) == ["toy-0", "toy-1", "toy-2"]
    assert len(run.samples) == 3 * 6  # published Tree-GRPO: M=2 trees x K=3 leaves
    collect_cfg = run.manifest["config"]["collect"]
    assert collect_cfg["sampler_params"] == {"m": 2, "n": 2, "l": 1, "k": 3}
    assert collect_cfg["env_kwargs"] == {"max_episode_steps": 8}
    assert collect_cfg["n_tasks"] == 3 and collect_cfg["tasks"] == "toy-{seed}"
    assert run.manifest["collect"]["invocation"] == {"concurrency": 4, "workers": 0}
    assert (out / "report.html").is_file()


def test_config_file_then_reuse_from_the_run_folder(tmp_path):
    cfg = tmp_path / "chain.toml"
    cfg.write_text(
        'env = "treegym/ToyRooms-v0"\nsampler = "chain"\npolicy = "scripted:expert:0.4"\n'
        "n_tasks = 2\nworkers = 0\nseed = 3\n[sampler_params]\ngroup_size = 3\n"
        "[env_kwargs]\nmax_episode_steps = 6\nslip_prob = 0.3\n"
    )
    first, again = tmp_path / "first", tmp_path / "again"
    res = collect("--config", str(cfg), "--out", str(first), "-q")
    assert res.exit_code == 0, res.stderr
    recorded = json.loads((first / "manifest.json").read_text())["config"]["collect"]
    assert recorded["sampler"] == "chain" and recorded["sampler_params"] == {"group_size": 3}
    assert recorded["env_kwargs"] == {"max_episode_steps": 6, "slip_prob": 0.3}
    assert recorded["seed"] == 3 and recorded["policy"] == "scripted:expert:0.4"
    # `--config RUN/manifest.json` (or the folder) repeats the run exactly
    res = collect("--config", str(first / "manifest.json"), "--out", str(again), "-q")
    assert res.exit_code == 0, res.stderr
    a, b = load_run(first), load_run(again)
    assert a.manifest["config"] == b.manifest["config"]
    assert _canonical(a) == _canonical(b) and len(a.samples) == 2 * 3
    # flags override the file; -p / -k update its tables key by key
    cfg_, _ = resolve_config(first, {"n_tasks": 5}, sampler_params={"group_size": 4},
                             env_kwargs={"slip_prob": 0.0})  # fmt: skip
    assert cfg_.n_tasks == 5 and cfg_.sampler_params == {"group_size": 4}
    assert cfg_.env_kwargs == {"max_episode_steps": 6, "slip_prob": 0.0}


def test_interrupted_collect_resumes_to_the_same_run(tmp_path, monkeypatch):
    args = [*TOY, "--n-tasks", "5", "--concurrency", "1"]
    full = tmp_path / "full"
    assert collect(*args, "--out", str(full)).exit_code == 0

    killed = tmp_path / "killed"
    real = collect_mod.Meter.task_done
    calls = []

    def interrupt_after_two(self, result):
        real(self, result)
        calls.append(result.task.task_id)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(collect_mod.Meter, "task_done", interrupt_after_two)
    res = collect(*args, "--out", str(killed))
    monkeypatch.undo()
    assert res.exit_code == 130
    assert "treegym collect --resume --out" in res.stderr and "2 tasks are on disk" in res.stderr
    partial = load_run(killed)
    assert not partial.complete and len(partial.task_ids) == 2

    res = collect(*args, "--out", str(killed), "--resume")
    assert res.exit_code == 0, res.stderr
    assert "(2 already finished)" in res.stdout
    resumed = load_run(killed)
    assert resumed.complete and sorted(resumed.task_ids) == sorted(load_run(full).task_ids)
    assert partial.task_ids == resumed.task_ids[:2]  # finished tasks kept, not redone
    assert _canonical(resumed) == _canonical(load_run(full))
    assert resumed.manifest["collect"]["sessions"] == 2


def test_folder_holding_a_run_needs_resume_or_force(tmp_path):
    out = tmp_path / "run"
    assert collect(*TOY, "--n-tasks", "1", "--out", str(out)).exit_code == 0
    run_id = load_run(out).manifest["run_id"]
    # no flag: refused, one line
    res = collect(*TOY, "--n-tasks", "1", "--out", str(out))
    assert res.exit_code == 2 and "--resume" in res.stderr and "--force" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    # --resume with another config: refused (it is a different run)
    res = collect(*TOY, "--n-tasks", "1", "--sampler", "chain", "--out", str(out), "--resume")
    assert res.exit_code == 2 and "holds another run" in res.stderr and "--force" in res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    # --resume with the same config: nothing left to do, same run
    res = collect(*TOY, "--n-tasks", "1", "--out", str(out), "--resume")
    assert res.exit_code == 0 and load_run(out).manifest["run_id"] == run_id
    # --force replaces it
    res = collect(*TOY, "--n-tasks", "2", "--sampler", "chain", "--out", str(out), "--force")
    assert res.exit_code == 0, res.stderr
    replaced = load_run(out)
    assert replaced.manifest["run_id"] != run_id and len(replaced.task_ids) == 2
    # --force never deletes a folder that is not a run
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    res = collect(*TOY, "--out", str(other), "--force")
    assert res.exit_code == 2 and "not a treegym run folder" in res.stderr
    assert (other / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", "treegym/TextWrld-v0"], "did you mean treegym/TextWorld-v0"),
        (["--sampler", "tree_grp"], "unknown sampler 'tree_grp' (did you mean 'tree_grpo'?)"),
        (["--policy", "gpt-4"], "unknown policy 'gpt-4'"),
        (["--policy", "scripted:expert:1.5"], "epsilon in [0, 1]"),
        (["--policy", "hf:/nonexistent/model"], "model folder not found"),
        (["-p", "mm=2"], "unknown parameter 'mm' for sampler tree_grpo (did you mean 'm'?)"),
        (["--token-budget", "0"], "a budget of zero collects nothing"),
        (["--sampler", "chain", "-p", "group_size=0"], "group_size must be >= 1, got 0"),
        (["-p", "m=0"], "M must be >= 1, got 0"),
        (["--n-tasks", "0"], "n-tasks must be >= 1, got 0"),
        (["--max-new-tokens", "4096"], "must be below context-length"),
        (["--config", "/nonexistent/run.toml"], "config file not found"),
        (["-k", "oops"], "key=value"),
        (["--tasks", "toy-3", "--n-tasks", "2"], "needs a pattern"),
        (["--gate", "selectiv"], "unknown gate 'selectiv' (did you mean 'selective'?)"),
        (["-g", "k=2"], "need a gate: --gate selective"),
        (["--gate", "selective", "-g", "d_l=1.5"], "d_L must be in [0, 1]"),
        (["--gate", "selective", "-g", "kk=2"], "unknown parameter 'kk' for gate selective"),
        (["--gate", "selective", "--sampler", "treepo"], "composes with chain and tree_grpo"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    res = collect(*TOY, *args, "--out", str(tmp_path / "run"))
    assert res.exit_code == 2, res.stdout
    assert message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    assert not (tmp_path / "run").exists()


def test_resume_needs_a_folder():
    res = collect(*TOY, "--resume")
    assert res.exit_code == 2 and "--resume needs the run folder" in res.stderr


def test_bad_config_files(tmp_path):
    bad_key = tmp_path / "bad.toml"
    bad_key.write_text('envv = "treegym/ToyRooms-v0"\n')
    res = collect("--config", str(bad_key))
    assert res.exit_code == 2 and "unknown config key 'envv' (did you mean 'env'?)" in res.stderr
    bad_type = tmp_path / "type.toml"
    bad_type.write_text('n_tasks = "three"\n')
    res = collect("--config", str(bad_type))
    assert res.exit_code == 2 and "n_tasks must be int" in res.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("env = \n")
    res = collect("--config", str(broken))
    assert res.exit_code == 2 and "not valid TOML" in res.stderr
    for res in (collect("--config", str(bad_key)), collect("--config", str(broken))):
        assert len(res.stderr.strip().splitlines()) == 1
        assert "Traceback" not in res.stdout + res.stderr


def test_default_config_is_the_embedded_family_with_published_tree_grpo():
    cfg, _ = resolve_config(None, {})
    ident = cfg.identity()
    assert ident["env"] == "treegym/TextWorld-v0" and ident["tasks"] == "embedded"
    assert ident["sampler"] == "tree_grpo" and ident["policy"] == "embedded"
    assert ident["sampler_params"] == {"m": 2, "n": 2, "l": 1, "k": 3}
    tasks = task_list(cfg)
    assert [t[2] for t in tasks] == list(range(10_000, 10_004))  # held-out seeds
    families = ["tw-coin_collector", "tw-treasure_hunter", "tw-cooking", "tw-coin_collector"]
    assert [t[0] for t in tasks] == [
        f"{f}-{s}" for f, s in zip(families, range(10_000, 10_004), strict=True)
    ]
    assert cfg.out_path().parent == Path("runs")
    alf, _ = resolve_config(None, {"env": "treegym/ALFWorld-v0", "n_tasks": 6})
    assert {t[1].split(":")[0] for t in task_list(alf)} == set(TASK_TYPES)
    toy, _ = resolve_config(None, {"env": "treegym/ToyRooms-v0", "tasks": "embedded"})
    with pytest.raises(ConfigError, match="--tasks embedded has no task mix for treegym/ToyRooms"):
        task_list(toy)


def test_tasks_from_a_folder_of_games(tmp_path, cooking_game):
    games = tmp_path / "games"
    for name in ("b", "a"):
        (games / name).mkdir(parents=True)
        for ext in (".z8", ".json"):
            (games / name / f"game{ext}").symlink_to(Path(cooking_game).with_suffix(ext))
    cfg = CollectConfig(tasks=str(games))
    assert [t[0] for t in task_list(cfg)] == ["a/game.z8", "b/game.z8"]
    out = tmp_path / "run"
    res = collect("--tasks", str(games), "--n-tasks", "1", "--policy", "scripted:expert:0.3",
                  "--sampler", "chain", "-p", "group_size=2", "--workers", "0", "-q",
                  "--out", str(out))  # fmt: skip
    assert res.exit_code == 0, res.stderr
    run = load_run(out)
    assert run.task_ids == ["a/game.z8"] and len(run.samples) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    res = collect("--tasks", str(empty), "--out", str(tmp_path / "x"))
    assert res.exit_code == 2 and "no games in" in res.stderr


@pytest.mark.slow
def test_default_collect_with_the_embedded_model_one_task(tmp_path, monkeypatch):
    """The README's command 1 path (embedded model, env worker processes, a held-out game),
    cut to one task so the suite stays fast."""
    monkeypatch.chdir(tmp_path)
    res = collect("--n-tasks", "1", "--name", "smoke")
    assert res.exit_code == 0, res.stdout + res.stderr
    run = load_run(tmp_path / "runs" / "smoke")
    assert run.task_ids == ["tw-coin_collector-10000"] and len(run.samples) == 6
    assert run.manifest["policy"]["policy"] == "hf"
    assert "prefix-cache hit rate" in res.stdout
    assert run.budget.cached_tokens > 0  # HFPolicy's prefix cache served the trunk


def test_nondeterministic_env_shows_its_replay_divergence_in_the_summary(tmp_path):
    """Replay-only restores of an env whose same seed plays differently fail some branches
    with ReplayDivergenceError: counted in the summary and named, not a silently lower rate."""
    import treegym
    from tests.test_checker import UnseededReplayOnlyToy  # noqa: F401 - registered by path

    treegym.register("tests/UnseededToy-v0", "tests.test_checker:UnseededReplayOnlyToy")
    random.seed(0)  # the env's slips (workers 0: in this process) repeat from run to run
    args = ["--env", "tests/UnseededToy-v0", *TOY[2:]]
    res = collect(*args, "--tasks", "toy-{seed}", "--n-tasks", "3", "--out", str(tmp_path / "r"))
    failed = int(res.stdout.split("failed branches")[1].split()[1].replace(",", ""))
    assert failed > 0, res.stdout
    said = " ".join(res.stderr.split())
    assert f"{failed} branch(es) failed; the first:" in said
    assert "ReplayDivergenceError: replay of" in said
