"""The training checkpoint kept as two files, the last and the one before it, so that a damaged file (a
disk that filled up, a copy cut short, something else saved under its name) costs at most one interval of
training and never blocks `dvc repro`: it is renamed aside with a warning and training resumes from the
other one, or starts over when neither can be read."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from common.io import save_torch


def previous_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically, keeping the file it replaces as ``<stem>.prev<suffix>`` (a crash
    in between leaves the previous one, which load_checkpoint falls back to)."""
    if path.exists():
        os.replace(path, previous_path(path))
    save_torch(path, state)


def _read(path: Path, required: tuple[str, ...]) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(k in state for k in required):
        got = sorted(state)[:8] if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"not a training checkpoint (expected the keys {list(required)}, found {got})")
    return state


def load_checkpoint(path: Path, required: tuple[str, ...] = ("step", "run_key"),
                    rename: bool = True) -> tuple[dict | None, Path | None]:
    """The newest readable checkpoint of ``path`` and its previous copy, with the file it came from; (None,
    None) when there is none. A file that cannot be read is passed over with a warning and, with ``rename``
    (the one process that writes, under torchrun), renamed to ``<name>.damaged``."""
    for candidate in (path, previous_path(path)):
        if not candidate.exists():
            continue
        try:
            return _read(candidate, required), candidate
        except Exception as e:  # noqa: BLE001 - torch.load raises many kinds (EOF, zip, unpickling, ...)
            if not rename:
                continue
            aside = candidate.with_name(candidate.name + ".damaged")
            os.replace(candidate, aside)
            warnings.warn(f"checkpoint {candidate} cannot be read ({type(e).__name__}: {e}); renamed to {aside} "
                          "(delete it when you like)", stacklevel=2)
    return None, None
