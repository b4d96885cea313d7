"""Device and mixed-precision choices, resolved in one place."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Literal

import torch

DeviceName = Literal["auto", "cpu", "cuda"]


PrecisionName = Literal["auto", "fp32", "bf16", "fp16"]


def resolve_device(name: DeviceName) -> torch.device:
    """``auto`` is CUDA when present, else CPU; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def _cpu_has_fast_bf16() -> bool:
    return bool(
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def resolve_precision(name: PrecisionName, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32.

    ``auto``: bf16 on CUDA GPUs that support it (fp16 otherwise) and on CPUs with native bf16
    (AVX-512-BF16/AMX: 2.5-4x faster than fp32 on the project machine, same Dice); fp32
    elsewhere.
    """
    if name == "fp32":
        return None
    if name == "bf16":
        return torch.bfloat16
    if name == "fp16":
        if device.type != "cuda":
            raise ValueError("fp16 autocast is for CUDA; use bf16 or fp32 on CPU")
        return torch.float16
    if name != "auto":
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {name!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if _cpu_has_fast_bf16() else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """``torch.autocast`` for `dtype`, or a no-op for fp32."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)
