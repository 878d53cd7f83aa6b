"""Training a byte-level BPE tokenizer that knows the ReAct template's special tokens.

Byte-level means any string encodes (no unknown token), so observations never lose text. The
result is a ``PreTrainedTokenizerFast`` saved in Hugging Face format, which transformers and
SGLang both load.
"""

from __future__ import annotations

from collections.abc import Iterable


def train_react_tokenizer(texts: Iterable[str], vocab_size: int = 1024):
    """A ``PreTrainedTokenizerFast`` trained on ``texts`` (pad/eos set to the template's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from .react import ASSISTANT, END, PAD, SPECIAL_TOKENS, SYSTEM, USER

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=END,
        additional_special_tokens=[SYSTEM, USER, ASSISTANT],
    )
