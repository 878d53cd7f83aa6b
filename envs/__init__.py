"""treegym environments: the snapshot/restore contract, built-in envs, registry, checker.

>>> import treegym.envs as tge
>>> env = tge.make("treegym/ToyRooms-v0")
>>> obs, info = env.reset(seed=0)
>>> snap = env.snapshot()            # immutable; restore any number of times
>>> _ = env.step(info["expert_plan"][0])
>>> env.restore(snap)                # back exactly where we were (RNG included)
>>> twin = env.fork()                # an independent env at the same state
"""

from .checker import CheckReport, CheckResult, Divergence, check_env
from .core import EnvRecipe, TextEnv
from .errors import (
    CorruptSnapshotError,
    EpisodeEndedError,
    GameFileError,
    GameGenerationError,
    InvalidActionError,
    InvalidOptionsError,
    ReplayDivergenceError,
    ResetNeededError,
    SnapshotMismatchError,
    TextEnvError,
    UnknownTaskError,
)
from .registry import (
    EnvEntry,
    load_plugins,
    make,
    plugin_errors,
    register,
    registered_envs,
)
from .snapshot import Snapshot
from .spaces import TextSpace
from .trajectory import Coverage

BUILTIN_ENVS = {
    "treegym/TextWorld-v0": (
        "treegym.envs.textworld_env:TextWorldEnv",
        "TextWorld games (.z8 via Jericho) or generator specs made offline; native snapshots",
    ),
    "treegym/ALFWorld-v0": (
        "treegym.envs.alfworld_env:ALFWorldEnv",
        "ALFWorld text games (PDDL backend, fast-downward): generated tasks or ALFWorld data",
    ),
    "treegym/SearchQA-v0": (
        "treegym.envs.searchqa_env:SearchQAEnv",
        "multi-hop QA with a search tool (BM25) over a local corpus: synthetic worlds or "
        "Search-R1 data; native snapshots",
    ),
    "treegym/ToyRooms-v0": (
        "treegym.envs.toy:ToyRoomsEnv",
        "pure-Python key-and-chest corridor with a slippery floor (RNG); for fast tests",
    ),
}


def _register_builtins() -> None:
    from . import registry

    registry._current_source = "built-in"
    try:
        for env_id, (entry_point, description) in BUILTIN_ENVS.items():
            register(env_id, entry_point, description=description)
    finally:
        registry._current_source = "user"


_register_builtins()  # plugins are loaded by treegym/__init__, once the whole API is bound

__all__ = [
    "BUILTIN_ENVS",
    "CheckReport",
    "CheckResult",
    "CorruptSnapshotError",
    "Coverage",
    "Divergence",
    "EnvEntry",
    "EnvRecipe",
    "EpisodeEndedError",
    "GameFileError",
    "GameGenerationError",
    "InvalidActionError",
    "InvalidOptionsError",
    "ReplayDivergenceError",
    "ResetNeededError",
    "Snapshot",
    "SnapshotMismatchError",
    "TextEnv",
    "TextEnvError",
    "TextSpace",
    "UnknownTaskError",
    "check_env",
    "load_plugins",
    "make",
    "plugin_errors",
    "register",
    "registered_envs",
]
