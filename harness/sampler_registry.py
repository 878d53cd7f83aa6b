"""The samplers by name (``--sampler NAME``): the one module that imports every sampler.

Samplers never import this module, so adding one is a new module plus one line here, and no
sampler module depends on another through the registry.
"""

from __future__ import annotations

from .sampler_base import Sampler
from .samplers import ChainSampler, TreeGRPOSampler
from .selective import GatedSampler
from .trace import TraceSampler
from .treepo import TreePOSampler

SAMPLERS: dict[str, type[Sampler]] = {
    "chain": ChainSampler,
    "tree_grpo": TreeGRPOSampler,
    "selective": GatedSampler,
    "trace": TraceSampler,
    "treepo": TreePOSampler,
}
