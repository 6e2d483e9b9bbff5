"""Which validation keeps an adapter as the best (trainer/qlora.py): a non-finite loss never,
then the accuracy of its answers, then the loss."""

from __future__ import annotations

import math
from pathlib import Path

from trainer.qlora import RunState, TrainConfig, _keep_best


class _Model:
    def __init__(self) -> None:
        self.saved = 0

    def save_pretrained(self, directory: str) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "adapter_model.safetensors").write_bytes(b"weights")
        self.saved += 1


def test_nan_is_no_improvement_and_a_finite_loss_after_it_is(tmp_path: Path) -> None:
    model, state, config = _Model(), RunState(run_key="k"), TrainConfig(patience=2)
    assert _keep_best(model, state, math.nan, None, config, tmp_path) is False
    assert state.best_validation_loss is None and state.bad_evaluations == 1
    assert model.saved == 0 and not (tmp_path / "best").exists()
    assert _keep_best(model, state, 2.5, None, config, tmp_path) is False
    assert state.best_validation_loss == 2.5 and model.saved == 1
    assert (tmp_path / "best" / "adapter_model.safetensors").is_file()
    assert _keep_best(model, state, math.inf, None, config, tmp_path) is False
    assert _keep_best(model, state, math.nan, None, config, tmp_path) is True  # patience spent
    assert state.best_validation_loss == 2.5 and model.saved == 1


def test_accuracy_decides_and_loss_breaks_ties(tmp_path: Path) -> None:
    """With answers scored, the adapter kept is the one that answers the validation prompts
    best; a lower loss wins only among equally accurate ones."""
    model, state, config = _Model(), RunState(run_key="k"), TrainConfig(patience=2)
    assert _keep_best(model, state, 2.0, 0.25, config, tmp_path) is False
    assert model.saved == 1
    assert _keep_best(model, state, 1.5, 0.50, config, tmp_path) is False  # more accurate
    assert model.saved == 2 and state.best_validation_accuracy == 0.50
    assert _keep_best(model, state, 0.9, 0.25, config, tmp_path) is False  # lower loss, worse
    assert model.saved == 2 and state.bad_evaluations == 1
    assert _keep_best(model, state, 1.2, 0.50, config, tmp_path) is False  # as accurate, lower
    assert model.saved == 3 and state.best_validation_loss == 1.2
    assert _keep_best(model, state, 1.0, 0.25, config, tmp_path) is False
    assert _keep_best(model, state, 0.8, 0.0, config, tmp_path) is True  # patience spent
    assert state.best_validation_accuracy == 0.50 and model.saved == 3
