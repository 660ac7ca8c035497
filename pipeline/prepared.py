"""Reading the prepare stage's outputs (the one place that knows their layout besides prepare itself)."""
from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import outputs

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    images: np.ndarray      # (n, 1, S, S) float16 in [-1, 1]
    labels: np.ndarray      # (n,) int64
    rows: list[dict]        # index.csv rows, in images order
    classes: list[str]

    @property
    def data_hash(self) -> str:
        """Identifies the images and labels of this split (from the prepared-pixel hashes)."""
        digest = hashlib.sha256()
        for row in self.rows:
            digest.update(f"{row['sha256']}:{row['label']}\n".encode())
        return digest.hexdigest()[:16]


def dataset_hash(prepared: Path) -> str | None:
    """Identifies a whole prepared set (pixels, labels and split of every image); None when not prepared."""
    try:
        with open(Path(prepared) / outputs.INDEX, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        return None
    digest = hashlib.sha256()
    for row in rows:
        digest.update(f"{row['sha256']}:{row['label']}:{row['split']}\n".encode())
    return digest.hexdigest()[:16]


def load_split(prepared: Path, split: str) -> Split:
    """One split of a prepared folder; images are read into memory (prepared sets are small)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    prepared = Path(prepared)
    for name in (outputs.IMAGES, outputs.INDEX, outputs.SUMMARY):
        if not (prepared / name).exists():
            raise FileNotFoundError(f"{prepared / name} is missing: run the prepare stage first (dvc repro prepare)")
    with open(prepared / outputs.INDEX, newline="") as fh:
        rows = [row for row in csv.DictReader(fh) if row["split"] == split]
    classes = json.loads((prepared / outputs.SUMMARY).read_text())["classes"]
    if not rows:
        raise ValueError(f"{prepared} has no {split!r} images")
    all_images = np.load(prepared / outputs.IMAGES, mmap_mode="r")
    idx = np.array([int(row["row"]) for row in rows])
    return Split(images=np.ascontiguousarray(all_images[idx]), labels=np.array([int(row["label"]) for row in rows]),
                 rows=rows, classes=classes)


CONTACT_SHEET_PER_CLASS = 16


def contact_sheet_rows(labels: np.ndarray) -> np.ndarray:
    """The rows of a synthetic set that its contact sheet shows (synthesize writes it, vtt_export leaves them out
    of the blinded set): the first CONTACT_SHEET_PER_CLASS of each label (-1 when unconditional), in label order."""
    return np.concatenate([np.array([], dtype=np.int64)] + [np.flatnonzero(labels == label)[:CONTACT_SHEET_PER_CLASS]
                                                           for label in np.unique(labels)])


def load_synthetic(folder: Path) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """The synthesize stage's images (N,1,S,S float16), labels (-1 when unconditional) and index rows."""
    folder = Path(folder)
    if not (folder / outputs.IMAGES).exists():
        raise FileNotFoundError(f"{folder / outputs.IMAGES} is missing: run the synthesize stage first")
    with open(folder / outputs.INDEX, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return np.load(folder / outputs.IMAGES), np.array([int(row["label"]) for row in rows]), rows
