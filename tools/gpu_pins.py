"""Pins that keep the CUDA torch already installed, for `make install GPU=1` (README, "On a GPU").

    python tools/gpu_pins.py > .gpu-pins.txt

Prints ``torch==<the installed version>`` (pip then keeps the installed build: a pin without a local label
such as +cu126 matches it) and the torchvision release built for that torch. Standalone: it imports only
torch, because it runs before the project is installed. Exits 1 with a message when torch is missing or is
a CPU build.
"""
from __future__ import annotations

import re
import sys


def pins(torch_version: str) -> str:
    """'2.11.0+cu126' -> 'torch==2.11.0\\ntorchvision==0.26.*' (torchvision 0.(m+15) goes with torch 2.m)."""
    m = re.fullmatch(r"2\.(\d+)\.(\d+)(?:[a-z]+\d*)?(?:\+[\w.]+)?", torch_version)
    if not m or int(m.group(1)) < 4:
        raise ValueError(f"torch {torch_version} is not a torch 2.x release >= 2.4 this project runs on; "
                         "install torch >= 2.4 for your CUDA first")
    public = torch_version.split("+")[0]
    return f"torch=={public}\ntorchvision==0.{int(m.group(1)) + 15}.*\n"


def main() -> int:
    try:
        import torch
    except ImportError:
        print("gpu_pins: no torch in this Python; install a CUDA build of torch first "
              "(https://pytorch.org/get-started/locally/), then `make install GPU=1`", file=sys.stderr)
        return 1
    if torch.version.cuda is None and torch.version.hip is None:
        print(f"gpu_pins: torch {torch.__version__} here is a CPU build; install a CUDA build of torch first "
              "(https://pytorch.org/get-started/locally/), or use `make install` without GPU=1", file=sys.stderr)
        return 1
    try:
        sys.stdout.write(pins(torch.__version__))
    except ValueError as e:
        print(f"gpu_pins: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
