"""Precision, decided once and applied the same way by the GAN, the domain extractor and the downstream CNN:
``fp32``, or ``bf16`` autocast (weights, gradients and optimiser state stay fp32; matmuls and convolutions
run in bf16). One object per choice, a no-op when disabled (nanoGPT's ``nullcontext()``/``torch.autocast``).
"""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16")


def native_bf16(device: torch.device | str) -> bool:
    """True when ``device`` computes bf16 natively: CUDA compute capability 8.0 or newer (Ampere on), ROCm.
    Asks about ``device`` itself, not the process's current device (``torch.cuda.is_bf16_supported`` does
    the latter and counts emulation as support). A CPU's bf16 autocast always works, natively or not."""
    device = torch.device(device)
    if device.type != "cuda":
        return device.type == "cpu"
    if torch.version.hip:
        return True
    return torch.cuda.get_device_capability(device)[0] >= 8


def autocast(device: torch.device | str, precision: str):
    """The context every forward pass runs in: ``torch.autocast`` to bf16, or a no-op for fp32.
    Reusable: enter it once per step."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, cache_enabled=False)
