"""The training compute dtype: bfloat16 only where the hardware computes it natively.

On a CPU without AVX512-BF16 or AMX, torch emulates bfloat16 matmuls (28 times slower than
float32 on an AVX2-only EPYC), so ``auto`` picks float32 there; a dtype set by hand is kept.
"""

from __future__ import annotations

import pytest

from trainer.qlora import TrainConfig, compute_dtype

torch = pytest.importorskip("torch")


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"),
    [(False, False, "float32"), (True, False, "bfloat16"), (False, True, "bfloat16")],
)
def test_auto_on_the_cpu_follows_native_bfloat16(
    monkeypatch: pytest.MonkeyPatch, avx512_bf16: bool, amx: bool, expected: str
) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert compute_dtype(TrainConfig(), "cpu") == expected


def test_auto_on_cuda_follows_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert compute_dtype(TrainConfig(), "cuda") == "float32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert compute_dtype(TrainConfig(), "cuda") == "bfloat16"


def test_a_dtype_set_by_hand_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert compute_dtype(TrainConfig(compute_dtype="bfloat16"), "cpu") == "bfloat16"
    assert compute_dtype(TrainConfig(compute_dtype="float32"), "cuda") == "float32"
