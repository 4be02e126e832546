"""Training components: collation, LoRA adapters, progress and metric callbacks."""
