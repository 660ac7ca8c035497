"""Device, precision and backends, chosen once at the edge: ``auto`` means CUDA when present, bf16 autocast on
GPUs that compute it natively, fp32 on a CPU. A setting that cannot be honoured here (a GPU-only one on a
machine without CUDA, bf16 on a GPU that would only emulate it, CUDA graphs under torchrun) is refused with
a message saying what to set instead; nothing asked for explicitly is silently dropped.

``configure_backends`` is the one place that sets process-wide backend state (the CUDA device, the cuDNN
autotuner, deterministic algorithms); the train_gan stage and bench/gan_throughput.py both call it, so the
benchmark measures what the stage runs.
"""
from __future__ import annotations

import os

import torch

from common.precision import native_bf16

# cuBLAS needs this before its first call to pick deterministic workspaces (deterministic algorithms)
CUBLAS_DETERMINISTIC = ":4096:8"


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """auto | cpu | cuda | cuda:N; plain ``cuda`` is the local rank's GPU under torchrun."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but no CUDA device is visible (torch {torch.__version__}, "
                         f"built for CUDA {torch.version.cuda}); set device: auto or cpu")
    if device.type == "cuda" and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} was asked for but only {torch.cuda.device_count()} CUDA device(s) are "
                         "visible (CUDA_VISIBLE_DEVICES renumbers them from 0)")
    return device


def resolve_precision(device: torch.device, precision: str = "auto", key: str = "precision") -> str:
    """auto -> bf16 on a GPU with native bf16, else fp32. An explicit bf16 is honoured on a CPU (autocast to
    bf16 works there, slowly where the CPU lacks bf16 instructions) and refused on a GPU that would emulate it."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" and native_bf16(device) else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"{key} must be auto, fp32 or bf16, got {precision!r}")
    if precision == "bf16" and device.type == "cuda" and not native_bf16(device):
        major, minor = torch.cuda.get_device_capability(device)
        raise ValueError(f"{key}=bf16: {device} ({torch.cuda.get_device_name(device)}, compute capability "
                         f"{major}.{minor}) has no native bf16 and would only emulate it, slower than fp32; "
                         f"set {key}=auto or fp32")
    return precision


def resolve_runtime(gan_params: dict, local_rank: int = 0, world: int = 1) -> dict:
    """device/precision/channels_last/cuda_graphs/deterministic from the gan params, ``auto`` decided here.

    Raises ValueError for a setting this machine cannot honour: ``cuda_graphs: true`` without a CUDA device
    or with several processes, ``bf16`` on a GPU without native bf16, a CUDA device that is not there."""
    device = resolve_device(gan_params["device"], local_rank)
    cuda = device.type == "cuda"
    precision = resolve_precision(device, gan_params["precision"], "gan.precision")
    # channels_last works on a CPU too
    channels_last = cuda if gan_params["channels_last"] == "auto" else bool(gan_params["channels_last"])
    graphs = gan_params["cuda_graphs"]
    if graphs == "auto":
        graphs = cuda and world == 1
    elif graphs is True and not cuda:
        raise ValueError(f"gan.cuda_graphs=true needs a CUDA device, and this run is on {device}; "
                         "set gan.cuda_graphs=auto (on whenever a GPU is used) or false")
    elif graphs is True and world > 1:
        raise ValueError(f"gan.cuda_graphs=true captures one process's step, and this run has {world} processes "
                         "(torchrun); set gan.cuda_graphs=auto or false")
    elif graphs not in (True, False):
        raise ValueError(f"gan.cuda_graphs must be auto, true or false, got {graphs!r}")
    deterministic = gan_params.get("deterministic", False)
    if deterministic not in (True, False):
        raise ValueError(f"gan.deterministic must be true or false, got {deterministic!r}")
    return {"device": device, "precision": precision, "channels_last": channels_last, "cuda_graphs": bool(graphs),
            "deterministic": deterministic}


def configure_backends(device: torch.device, deterministic: bool = False) -> dict:
    """Process-wide backend settings for a run on ``device``; returns what was set (for logs and MLflow).

    CUDA: the device becomes the process's current device (so library calls that use the current device,
    and streams created without one, land on it) and the cuDNN autotuner is on (fixed shapes: it tunes once,
    during the CUDA-graph warm-up), unless ``deterministic``: then the autotuner is off, cuDNN and every op
    with a deterministic variant use it (ops without one warn), and cuBLAS gets deterministic workspaces.
    On a CPU, results are already reproducible; ``deterministic`` still turns on deterministic algorithms.
    """
    device = torch.device(device)
    done = {"deterministic": bool(deterministic)}
    if device.type == "cuda":
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = not deterministic
        done.update(device=str(device), cudnn_benchmark=not deterministic)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return done
