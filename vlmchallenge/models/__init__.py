"""Model loading, LoRA/QLoRA, prompts, collation and the LightningModule."""
