"""Policies behind one async, token-in/token-out protocol.

``HFPolicy`` (local transformers with a prefix KV cache), ``SGLangPolicy`` (SGLang's native
``/generate``), ``ScriptedPolicy`` (noisy expert / random, no model), the ReAct template and
transcript that keep every episode as exact token ids, and the embedded default model.
Heavy imports (torch, transformers, aiohttp) happen only when those classes are used.
"""

from .protocol import GenerateRequest, GenerateResult, Policy, PolicyError, SamplingParams
from .react import MALFORMED_ACTION, ReActTemplate, Transcript, Turn, parse_action, tidy_observation
from .scripted import ScriptedPolicy

__all__ = [
    "MALFORMED_ACTION",
    "GenerateRequest",
    "GenerateResult",
    "HFPolicy",
    "Policy",
    "PolicyError",
    "ReActTemplate",
    "SGLangPolicy",
    "SamplingParams",
    "ScriptedPolicy",
    "Transcript",
    "Turn",
    "embedded_model_path",
    "parse_action",
    "tidy_observation",
]


def __getattr__(name: str):  # lazy: torch/transformers/aiohttp load only when asked for
    if name == "HFPolicy":
        from .hf import HFPolicy

        return HFPolicy
    if name == "SGLangPolicy":
        from .sglang import SGLangPolicy

        return SGLangPolicy
    if name == "embedded_model_path":
        from .embedded import embedded_model_path

        return embedded_model_path
    raise AttributeError(name)
