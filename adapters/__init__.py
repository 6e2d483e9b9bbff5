"""loragate adapters: the base model, the vLLM engine client and its supervisor."""
