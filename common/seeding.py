"""One base seed drives everything; each consumer derives an independent stream from it by name."""
from __future__ import annotations

import zlib

import numpy as np


def derive_seed(base_seed: int, *names: str | int) -> np.random.SeedSequence:
    """A SeedSequence for ``names`` (a stage, then any sub-keys), independent across names."""
    key = [int(base_seed)] + [n if isinstance(n, int) else zlib.crc32(str(n).encode()) for n in names]
    return np.random.SeedSequence(key)


def stage_rng(base_seed: int, *names: str | int) -> np.random.Generator:
    """A NumPy generator for ``names``, reproducible from ``base_seed`` alone."""
    return np.random.default_rng(derive_seed(base_seed, *names))
