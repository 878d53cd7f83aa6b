"""treegym: an agent-environment gym with a tree-rollout harness for multi-turn agentic RL.

Importing ``treegym`` registers the built-in environments (``treegym/TextWorld-v0``,
``treegym/ALFWorld-v0``, ``treegym/ToyRooms-v0``) and every installed ``treegym.envs`` plugin
with gymnasium. Plugins are loaded last, once every public name below is bound, because a
plugin's own code runs ``import treegym; treegym.register(...)`` while this module is still
being imported.
"""

from treegym.envs import (
    CheckReport,
    Snapshot,
    TextEnv,
    check_env,
    load_plugins,
    make,
    register,
    registered_envs,
)

__version__ = "0.1.0"

__all__ = [
    "CheckReport",
    "RunWriter",
    "Snapshot",
    "TextEnv",
    "TorchRunDataset",
    "__version__",
    "check_env",
    "collate",
    "load_run",
    "make",
    "register",
    "registered_envs",
    "to_hf_dataset",
    "verl_batch",
    "verl_batches",
]

_RUN_API = ("RunWriter", "TorchRunDataset", "collate", "load_run", "to_hf_dataset", "verl_batch",
            "verl_batches")  # fmt: skip


def __getattr__(name: str):
    if name in _RUN_API:
        from treegym import harness

        return getattr(harness, name)
    raise AttributeError(f"module 'treegym' has no attribute {name!r}")


load_plugins()  # last: plugins may use any name above (see the module docstring)
