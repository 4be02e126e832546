"""A small byte-level BPE tokenizer trained in-process, for the ``tiny:`` model presets.

Byte-level BPE can encode any text, so a tiny model never meets an unknown character; the
merges are learnt from a fixed built-in corpus, so the result is the same on every machine.
"""

from __future__ import annotations

from collections.abc import Mapping

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# A fixed corpus: common English words plus the vocabulary of the bundled examples.
# Changing it changes every tiny preset's fingerprint (the cache key includes it).
_CORPUS = """
what which where when who how why is are was were the a an of in on at to for with from by and or not
colour color shape shapes image picture photo this that these those there here answer question yes no
red green blue yellow orange purple pink brown black white grey gray cyan magenta
circle square triangle star cross diamond ring line dot left right top bottom center middle small large
benign malignant lesion skin mole melanoma nevus patient diagnosis label class classify describe
one two three four five six seven eight nine zero digit number handwritten
the model user assistant system please tell me what you see in it its is it a an
""".split()


def train_tiny_tokenizer(
    special_tokens: list[str],
    *,
    vocab_size: int = 512,
    named_tokens: Mapping[str, str],
    extra_special_tokens: Mapping[str, str] | None = None,
    chat_template: str | None = None,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on the built-in corpus and wrap it for transformers.

    ``named_tokens`` maps the standard roles (``bos_token``, ``eos_token``, ``pad_token``, ...)
    to strings from ``special_tokens``; ``extra_special_tokens`` gives processors the named
    multimodal tokens they look up (``image_token``, ``boi_token``, ...).
    """
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Repeat with spaces so that " word" (the form words take mid-sentence) gets merged too.
    tok.train_from_iterator([" ".join(_CORPUS)] * 4 + [" " + w for w in _CORPUS], trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        extra_special_tokens=dict(extra_special_tokens or {}),
        **named_tokens,
    )
    if chat_template is not None:
        hf.chat_template = chat_template
    return hf


def token_id(tokenizer: PreTrainedTokenizerFast, token: str) -> int:
    """The id of one token (``convert_tokens_to_ids`` is typed to return a list too)."""
    found = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(found, int):
        raise TypeError(f"token {token!r} maps to {found!r}, not one id")
    return found
