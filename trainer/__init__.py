"""loragate trainer: curation, QLoRA training, the evaluation gate and publishing (issue 5)."""
