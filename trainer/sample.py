"""A sample LoRA adapter for the base model, made in seconds without any data: for trying
publishing, aliases, canary rollouts and experiments before the trainer has made a real one
(the README's walk-through, the benchmarks, the tests).

Its weights are random (PEFT's ``init_lora_weights=False``), so it answers differently
from the base model, and two seeds answer differently from each other; it has learnt
nothing. A real adapter comes from ``loragate train``.
"""

from __future__ import annotations

from pathlib import Path

from core.hf_loading import model_load_lock, tie_output_head
from trainer.qlora import require_training_stack

SAMPLE_MODULES = ("q_proj", "v_proj")


def sample_adapter(
    target: Path,
    base_model: Path,
    *,
    seed: int = 0,
    rank: int = 4,
    modules: tuple[str, ...] = SAMPLE_MODULES,
) -> Path:
    """Write a PEFT LoRA for ``base_model`` with random weights (drawn from ``seed``) to
    ``target``, in the layout ``loragate adapters publish`` takes."""
    torch, transformers, peft = require_training_stack()
    torch.manual_seed(seed)
    with model_load_lock:
        model = transformers.AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    tie_output_head(model)
    config = peft.LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules=list(modules), init_lora_weights=False
    )
    peft.get_peft_model(model, config).save_pretrained(target)
    (target / "README.md").unlink(missing_ok=True)  # PEFT's model-card template
    return target
