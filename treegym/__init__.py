"""treegym: an agent-environment gym with a tree-rollout harness for multi-turn agentic RL.

Importing ``treegym`` registers the built-in environments (``treegym/TextWorld-v0``,
``treegym/ToyRooms-v0``) and every installed ``treegym.envs`` plugin with gymnasium.
"""

from treegym.envs import (
    CheckReport,
    Snapshot,
    TextEnv,
    check_env,
    make,
    register,
    registered_envs,
)

__version__ = "0.1.0"

__all__ = [
    "CheckReport",
    "Snapshot",
    "TextEnv",
    "__version__",
    "check_env",
    "make",
    "register",
    "registered_envs",
]
