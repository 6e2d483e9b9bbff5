"""Loading Hugging Face models safely inside one process.

transformers (5.x) turns weight tying off while ``from_pretrained`` builds a model by swapping
``PreTrainedModel.tie_weights`` for a no-op *on the class*, and puts it back afterwards. Two
loads in different threads (the gateway's embedder beside a trainer's base model, two gateways
in one test process) interleave those swaps and can leave the no-op in place for good. Every
later load of a model with a tied output head (SmolLM2 among them) then gets a head that is
never filled: the model only babbles. Seen in CI: a base model prepared after other tests
answered "iman Please ephemer Various lilies".

So every load in loragate holds ``model_load_lock``, and loaders of causal LMs call
``tie_output_head`` themselves rather than trusting the class method to be intact.
"""

from __future__ import annotations

import threading
from typing import Any

# Process-wide by nature: what it guards (a class attribute of transformers) is process-wide.
model_load_lock = threading.RLock()


def tie_output_head(model: Any) -> None:
    """Share the input embedding with the output head when the config says they are tied."""
    config = getattr(model, "config", None)
    if not getattr(config, "tie_word_embeddings", False):
        return
    head, embedding = model.get_output_embeddings(), model.get_input_embeddings()
    if head is not None and embedding is not None and head.weight is not embedding.weight:
        head.weight = embedding.weight
