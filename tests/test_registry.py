"""Registration through gymnasium, treegym.envs.make, and third-party plugins."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium
import pytest

import treegym
from treegym.envs import registered_envs


def test_builtins_are_in_gymnasiums_registry_with_their_source():
    ids = {e.id: e for e in registered_envs()}
    assert ids["treegym/TextWorld-v0"].source == "built-in"
    assert ids["treegym/ToyRooms-v0"].source == "built-in"
    assert "treegym/TextWorld-v0" in gymnasium.registry


def test_gymnasium_make_textworld(cooking_game):
    env = gymnasium.make("treegym/TextWorld-v0", game=cooking_game)
    obs, info = env.reset(seed=0)
    assert "expert_plan" in info and isinstance(obs, str)
    assert env.unwrapped.snapshot().depth == 0


def test_unknown_id_suggests_close_matches():
    with pytest.raises(gymnasium.error.NameNotFound, match="did you mean treegym/ToyRooms-v0"):
        treegym.make("treegym/ToyRoom-v0")


def test_register_helper_and_non_textenv_refused():
    treegym.register(
        "tests/Toy3-v0",
        "treegym.envs.toy:ToyRoomsEnv",
        kwargs={"n_rooms": 3},
        description="three rooms",
    )
    env = treegym.make("tests/Toy3-v0")
    assert env.n_rooms == 3 and env.spec.id == "tests/Toy3-v0"
    assert env.recipe.build().n_rooms == 3
    entry = next(e for e in registered_envs() if e.id == "tests/Toy3-v0")
    assert entry.source == "user" and entry.description == "three rooms"
    gymnasium.register("tests/NotText-v0", entry_point="gymnasium.envs.classic_control:CartPoleEnv")
    with pytest.raises(TypeError, match="not a treegym TextEnv"):
        treegym.make("tests/NotText-v0")
    with pytest.raises(ValueError, match="module:Class"):
        treegym.register("tests/Bad-v0", "no_colon_here")


PLUGIN_PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "treegym-plugin-demo"
version = "0.0.1"

[project.entry-points."treegym.envs"]
demo = "treegym_plugin_demo:register_envs"

[tool.setuptools]
py-modules = ["treegym_plugin_demo"]
"""

PLUGIN_MODULE = '''
"""A third-party env package: a ToyRooms variant registered through the entry point."""
import gymnasium
from treegym.envs.toy import ToyRoomsEnv


class Corridor(ToyRoomsEnv):
    def __init__(self, **kwargs):
        super().__init__(n_rooms=6, **kwargs)


def register_envs():
    gymnasium.register(id="plugindemo/Corridor-v0", entry_point="treegym_plugin_demo:Corridor",
                       order_enforce=False)
'''


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory) -> dict[str, str]:
    """Build and install a real package with a treegym.envs entry point into a temp folder."""
    root = tmp_path_factory.mktemp("plugin")
    src, target = root / "src", root / "site"
    src.mkdir()
    (src / "pyproject.toml").write_text(PLUGIN_PYPROJECT)
    (src / "treegym_plugin_demo.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(src),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    assert list(target.glob("treegym_plugin_demo-*.dist-info"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
    return env


def _treegym(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).with_name("treegym")
    return subprocess.run([str(cli), *args], env=env, capture_output=True, text=True, timeout=600)


def test_plugin_env_is_listed_without_importing_it(installed_plugin):
    out = _treegym(["envs"], installed_plugin)
    assert out.returncode == 0, out.stderr
    flat = " ".join(out.stdout.split())
    assert "plugindemo/Corridor-v0" in flat and "treegym-plugin-demo:demo" in flat


def test_plugin_env_passes_treegym_check(installed_plugin):
    out = _treegym(["check", "plugindemo/Corridor-v0", "--trials", "2"], installed_plugin)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all checks passed" in out.stdout


def test_plugin_env_works_with_gymnasium_make_once_treegym_is_imported(installed_plugin):
    code = (
        "import gymnasium, treegym\n"
        "env = gymnasium.make('plugindemo/Corridor-v0')\n"
        "print(len(env.unwrapped.layout.rooms))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=installed_plugin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "6"


def test_broken_plugin_is_reported_not_fatal(tmp_path, installed_plugin):
    broken = tmp_path / "site"
    dist = broken / "treegym_broken-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: treegym-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[treegym.envs]\nbroken = treegym_broken_missing:register\n"
    )
    env = dict(installed_plugin)
    env["PYTHONPATH"] = os.pathsep.join([str(broken), env["PYTHONPATH"]])
    out = _treegym(["envs"], env)
    assert out.returncode == 0
    assert "treegym-broken:broken failed to load" in " ".join(out.stderr.split())
    assert "plugindemo/Corridor-v0" in out.stdout
