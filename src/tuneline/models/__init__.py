"""Models: the families (presets, LoRA targets, chat formats), loading, tokenizers and processors."""
