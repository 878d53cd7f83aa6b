"""The treegym command line through typer's runner."""

from __future__ import annotations

from typer.testing import CliRunner

from treegym.cli import app

runner = CliRunner()


def test_envs_lists_builtins():
    out = runner.invoke(app, ["envs"], terminal_width=200)
    assert out.exit_code == 0
    assert "treegym/TextWorld-v0" in out.stdout and "treegym/ToyRooms-v0" in out.stdout


def test_check_passes_with_kwargs():
    out = runner.invoke(
        app,
        ["check", "treegym/ToyRooms-v0", "-k", "n_rooms=5", "-k", "slip_prob=0.4"],
        terminal_width=200,
    )
    assert out.exit_code == 0, out.stdout
    assert "all checks passed" in out.stdout and "restore_equivalence" in out.stdout


def test_check_textworld_default_game():
    out = runner.invoke(app, ["check", "treegym/TextWorld-v0", "--trials", "2"], terminal_width=200)
    assert out.exit_code == 0, out.stdout
    assert "all checks passed" in out.stdout


def test_check_unknown_env_is_one_line_and_exit_2():
    out = runner.invoke(app, ["check", "treegym/TextWrld-v0"], terminal_width=200)
    assert out.exit_code == 2
    assert "did you mean treegym/TextWorld-v0" in out.stderr
    assert "Traceback" not in out.stdout + out.stderr


def test_check_bad_constructor_argument_is_a_clear_error(tmp_path):
    out = runner.invoke(
        app,
        ["check", "treegym/TextWorld-v0", "-k", f"game={tmp_path}/missing.z8"],
        terminal_width=200,
    )
    assert out.exit_code == 2 and "game file not found" in out.stderr
    out = runner.invoke(app, ["check", "treegym/ToyRooms-v0", "-k", "oops"], terminal_width=200)
    assert out.exit_code == 2 and "key=value" in out.stderr


def test_check_failing_env_exits_1():
    import treegym
    from tests.test_checker import SilentBadInputToy  # noqa: F401 - registered by path below

    treegym.register("tests/SilentBad-v0", "tests.test_checker:SilentBadInputToy")
    out = runner.invoke(
        app, ["check", "tests/SilentBad-v0", "--skip", "portable_snapshot"], terminal_width=200
    )
    assert out.exit_code == 1
    assert "FAILED" in out.stdout and "some checks failed" in out.stdout


def test_games_bad_spec():
    out = runner.invoke(app, ["games", "tw-cooking:go=5"], terminal_width=200)
    assert out.exit_code == 2 and "must be one of" in out.stderr


def test_demo_plays_a_tree_and_reports_costs(cooking_game):
    out = runner.invoke(
        app,
        ["demo", "--game", cooking_game, "--branches", "2", "--branch-every", "3"],
        terminal_width=200,
    )
    assert out.exit_code == 0, out.stdout
    assert "fork →" in out.stdout and "restores (in place)" in out.stdout
    leaves = next(line for line in out.stdout.splitlines() if "trajectories (leaves)" in line)
    # trunk + 2 branches at each of the fork points: an odd number of at least 3
    n = int(leaves.split("│")[2])
    assert n >= 3 and n % 2 == 1
