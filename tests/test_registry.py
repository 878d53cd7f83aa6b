"""Registration through gymnasium, treegym.envs.make, and third-party plugins."""

from __future__ import annotations

import os
import re
import subprocess
import sys
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


README = Path(__file__).resolve().parents[1] / "README.md"
MARKER_VAR = "TREEGYM_TEST_IMPORT_MARKERS"

DEMO_PYPROJECT = """
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

DEMO_MODULE = '''
"""A third-party env package registering a ToyRooms variant with gymnasium.register."""
import gymnasium
from treegym.envs.toy import ToyRoomsEnv


class Corridor(ToyRoomsEnv):
    def __init__(self, **kwargs):
        super().__init__(n_rooms=6, **kwargs)


def register_envs():
    gymnasium.register(id="plugindemo/Corridor-v0", entry_point="treegym_plugin_demo:Corridor",
                       order_enforce=False)
'''

README_PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "treegym-{package}"
version = "0.0.1"

{entry_points}
[tool.setuptools]
packages = ["{package}"]
"""

#: The env module the README's plugin names; importing it leaves a marker file.
README_ENVS_MODULE = """
import os
from pathlib import Path

from treegym.envs.toy import ToyRoomsEnv

if os.environ.get("{marker}"):
    Path(os.environ["{marker}"], __name__).touch()


class MyGameEnv(ToyRoomsEnv):
    def __init__(self, **kwargs):
        super().__init__(n_rooms=5, **kwargs)
"""

#: Packages written from the README's plugin example, in both documented spellings.
README_PLUGINS = {"mypkg": "import treegym", "mypkg_from": "from treegym import register"}


def readme_plugin() -> tuple[str, str]:
    """The README's plugin entry point (TOML) and plugin module (Python), verbatim."""
    text = README.read_text()
    section = text[text.index("### Your own environment") : text.index("## Policies")]
    toml = re.search(r"```toml\n(.*?)```", section, re.S)
    module = re.search(r"```python\n# mypkg/plugin.py\n(.*?)```", section, re.S)
    assert toml and module, "the README's plugin example moved"
    return toml.group(1), module.group(1)


def _spelled(code: str, package: str, spelling: str) -> str:
    """The README's code for ``package``, registering through ``spelling``."""
    code = code.replace("mypkg", package)
    if spelling == "from treegym import register":
        assert "import treegym\n" in code and "treegym.register(" in code
        code = code.replace("import treegym\n", "from treegym import register\n")
        code = code.replace("treegym.register(", "register(")
    return code


def _write_readme_plugin(src: Path, package: str, spelling: str) -> None:
    entry_points, module = readme_plugin()
    (src / package).mkdir(parents=True)
    (src / package / "__init__.py").write_text("")
    (src / package / "plugin.py").write_text(_spelled(module, package, spelling))
    (src / package / "envs.py").write_text(README_ENVS_MODULE.format(marker=MARKER_VAR))
    entry_points = entry_points.replace("mypkg", package)
    (src / "pyproject.toml").write_text(
        README_PYPROJECT.format(package=package, entry_points=entry_points)
    )


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory) -> dict[str, str]:
    """Build and install real packages with treegym.envs entry points into a temp folder: a
    demo registering with gymnasium directly, and the README's example in both spellings."""
    root = tmp_path_factory.mktemp("plugin")
    target, demo = root / "site", root / "demo"
    demo.mkdir()
    (demo / "pyproject.toml").write_text(DEMO_PYPROJECT)
    (demo / "treegym_plugin_demo.py").write_text(DEMO_MODULE)
    sources = [demo]
    for package, spelling in README_PLUGINS.items():
        _write_readme_plugin(root / package, package, spelling)
        sources.append(root / package)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--target", str(target), *map(str, sources)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    assert list(target.glob("treegym_plugin_demo-*.dist-info"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
    return env


def _treegym(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).with_name("treegym")
    return subprocess.run([str(cli), *args], env=env, capture_output=True, text=True, timeout=600)


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


def test_readme_plugins_load_and_are_listed_without_importing_their_envs(
    installed_plugin, tmp_path
):
    env = {**installed_plugin, MARKER_VAR: str(tmp_path)}
    out = _treegym(["envs"], env)
    assert out.returncode == 0, out.stderr
    assert "failed to load" not in out.stderr, out.stderr
    flat = " ".join(out.stdout.split())
    for package in README_PLUGINS:
        row = rf"{package}/MyGame-v0 │ plugin treegym-{package}:{package} │"
        assert re.search(row, flat), flat
    assert "plugindemo/Corridor-v0" in flat and "treegym-plugin-demo:demo" in flat
    assert list(tmp_path.iterdir()) == []  # listing them imported no env module
    out = _treegym(["check", "mypkg_from/MyGame-v0"], env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["mypkg_from.envs"]  # the marker works


@pytest.mark.parametrize("first", ["treegym", "mypkg_from.plugin", "mypkg.plugin"])
def test_readme_plugins_register_whatever_is_imported_first(installed_plugin, first):
    """A plugin module imported before treegym imports treegym, which loads the plugins while
    that module is still running: it is loaded once it has finished, without a warning."""
    code = (
        "import warnings; warnings.simplefilter('error')\n"
        f"import {first}\n"
        "import treegym\n"
        "ids = {e.id for e in treegym.registered_envs()}\n"
        "assert {'mypkg/MyGame-v0', 'mypkg_from/MyGame-v0'} <= ids, ids\n"
        "assert not treegym.envs.plugin_errors(), treegym.envs.plugin_errors()\n"
        "print(treegym.make('mypkg_from/MyGame-v0').n_rooms)\n"
    )
    out = _python(code, installed_plugin)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "5"


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
    out = _python(code, installed_plugin)
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
