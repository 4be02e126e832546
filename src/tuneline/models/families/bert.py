"""BERT-style encoders (MiniLM, BERT, ...) fine-tuned as sequence classifiers.

``AutoModelForSequenceClassification`` puts a classification head (pooler output -> linear layer, one
logit per class) on the pretrained encoder. The head is new, initialised from ``run.seed``; the class of a
record is the index of its label in the sorted label list, stored in the model config (``id2label``).
The encoder reads the text of the record's prompt (every user turn, system turns left out: those carry
instructions for chat models), truncated to ``data.max_seq_length``. LoRA adapts the encoder's linear
layers (peft task type SEQ_CLS) and trains the head in full (``modules_to_save``).

The ``tiny:bert`` preset is a 2-layer encoder of hidden size 64 with a byte-level tokenizer that adds
``[CLS] ... [SEP]`` like BERT's, saved as a bare ``BertModel`` (as sentence-embedding checkpoints such as
all-MiniLM-L6-v2 are), so loading it grows a fresh head exactly as the real model does.
"""

from __future__ import annotations

from pathlib import Path

from tuneline.models.families.base import ModelFamily, register_family
from tuneline.models.tiny import TEXT_SIZE, save_checkpoint, seeded_model
from tuneline.models.tokenizer import token_id, train_tiny_tokenizer

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tiny(folder: Path, seed: int) -> None:
    from tokenizers import processors
    from transformers import BertConfig, BertModel

    tokenizer = train_tiny_tokenizer(
        SPECIAL_TOKENS,
        named_tokens={
            "pad_token": "[PAD]",
            "unk_token": "[UNK]",
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "mask_token": "[MASK]",
        },
    )
    cls, sep = token_id(tokenizer, "[CLS]"), token_id(tokenizer, "[SEP]")
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    config = BertConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=TEXT_SIZE["hidden_size"],
        intermediate_size=TEXT_SIZE["intermediate_size"],
        num_hidden_layers=TEXT_SIZE["num_hidden_layers"],
        num_attention_heads=TEXT_SIZE["num_attention_heads"],
        max_position_embeddings=512,
    )
    save_checkpoint(folder, seeded_model(BertModel, config, seed), tokenizer)


FAMILY = register_family(
    ModelFamily(
        name="bert",
        model_types=("bert",),
        multimodal=False,
        auto_class="AutoModelForSequenceClassification",
        build_tiny=build_tiny,
        quant_skip_modules=("classifier",),
        kind="classifier",
        lora_task_type="SEQ_CLS",
        lora_modules_to_save=("classifier",),
    )
)
