"""A non-finite validation loss is never kept as the best adapter (trainer/qlora.py)."""

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
    assert _keep_best(model, state, math.nan, config, tmp_path) is False
    assert state.best_validation_loss is None and state.bad_evaluations == 1
    assert model.saved == 0 and not (tmp_path / "best").exists()
    assert _keep_best(model, state, 2.5, config, tmp_path) is False
    assert state.best_validation_loss == 2.5 and model.saved == 1
    assert (tmp_path / "best" / "adapter_model.safetensors").is_file()
    assert _keep_best(model, state, math.inf, config, tmp_path) is False
    assert _keep_best(model, state, math.nan, config, tmp_path) is True  # patience spent
    assert state.best_validation_loss == 2.5 and model.saved == 1
