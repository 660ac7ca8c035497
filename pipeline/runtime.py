"""Device and precision, chosen once at the edge: ``auto`` means CUDA when present, bf16 autocast on GPUs
that support it, fp32 on a CPU."""
from __future__ import annotations

import torch


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """auto | cpu | cuda | cuda:N; plain ``cuda`` is the local rank's GPU under torchrun."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but no CUDA device is visible")
    return device


def resolve_runtime(g: dict, local_rank: int) -> dict:
    """device/precision/channels_last/cuda_graphs from params, with ``auto`` decided once, here."""
    device = resolve_device(g["device"], local_rank)
    cuda = device.type == "cuda"
    precision = g["precision"]
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    auto = lambda v: cuda if v == "auto" else bool(v)  # noqa: E731
    return {"device": device, "precision": precision, "channels_last": auto(g["channels_last"]),
            "cuda_graphs": auto(g["cuda_graphs"])}
