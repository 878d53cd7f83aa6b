"""The embedded default model: a tiny Llama shipped under ``data/embedded``.

No model hub is reachable where treegym is developed, so the project trains its own weak agent
(``scripts/train_embedded_model.py``, reproducible from a seed, CPU-only) on noisy-expert ReAct
transcripts of a task mix (``treegym.envs.embedded_mix``), with a byte-level BPE tokenizer that
knows the ReAct template's special tokens. It is a standard ``LlamaForCausalLM``, so
transformers, SGLang and vLLM all load it; ``training.json``, ``template.json`` and
``eval.json`` beside the weights record how it was made, what it sees and how well it plays.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def embedded_model_path() -> Path:
    """Folder of the embedded model (config, safetensors weights, tokenizer, template)."""
    path = Path(str(resources.files("treegym.data") / "embedded"))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"the embedded model is missing at {path}; reinstall treegym or rebuild it with "
            "scripts/train_embedded_model.py"
        )
    return path
