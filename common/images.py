"""Edges of the [-1,1] convention: to 8-bit grey, to a tiled grid, to a PNG file (no metadata chunks)."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from common.io import atomic_file


def to_uint8(x) -> np.ndarray:
    """[-1,1] floats (any shape; a torch tensor or an array) -> uint8, -1 -> 0 and 1 -> 255, rounded."""
    a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float32)
    return np.clip(np.rint((a + 1) * 127.5), 0, 255).astype(np.uint8)


def tile(images, ncol: int, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """(N,1,H,W) or (N,H,W) images in [-1,1] -> one (rows*(H+pad)+pad, ...) uint8 grid, row-major."""
    a = to_uint8(images)
    if a.ndim == 4:
        if a.shape[1] != 1:
            raise ValueError(f"expected one channel, got {a.shape}")
        a = a[:, 0]
    if a.ndim != 3 or len(a) == 0:
        raise ValueError(f"expected (N,1,H,W) or (N,H,W) images, got {a.shape}")
    n, h, w = a.shape
    ncol = max(1, min(ncol, n))
    nrow = -(-n // ncol)
    out = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad), pad_value, np.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = a[i]
    return out


def save_png(path: str | os.PathLike, gray: np.ndarray) -> None:
    """A 2-D uint8 array as an 8-bit greyscale PNG, atomically; PIL writes no text chunks unless asked."""
    if gray.dtype != np.uint8 or gray.ndim != 2:
        raise ValueError(f"expected a 2-D uint8 array, got {gray.dtype} {gray.shape}")
    with atomic_file(path) as tmp:
        Image.fromarray(gray).save(tmp, format="PNG")
