"""Finding the inputs of a source: a DICOM tree with a labels CSV, class folders, or a MedMNIST npz."""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

KINDS = ("dicom", "folders", "npz")
PATH_KEYS = ("path", "file", "filename", "file_path")
UID_KEYS = ("sop_instance_uid", "sopinstanceuid")
PATIENT_KEYS = ("patient_id", "patientid")
LABEL_KEYS = ("label", "class", "target", "finding")


class SourceError(ValueError):
    """The source as a whole is unusable or misconfigured (the stage stops with this message)."""


@dataclass
class Item:
    path: Path  # absolute
    rel: str  # posix path relative to the source root: what index.csv and quarantine.csv show
    label: str | None = None  # from the class folder; None for a DICOM tree (labels come from the CSV)


@dataclass
class Scan:
    kind: str
    items: list[Item] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)  # (rel, reason)
    skipped_hidden: int = 0


def detect_kind(source: Path, labels: str) -> str:
    if source.is_file() and source.suffix.lower() == ".npz":
        return "npz"
    if not source.is_dir():
        raise SourceError(f"data source {source} is neither a folder nor an .npz file")
    if (source / labels).is_file():
        return "dicom"
    if any(p.is_dir() and not p.name.startswith(".") for p in source.iterdir()):
        return "folders"
    raise SourceError(f"cannot tell the kind of source {source}: expected a labels CSV named {labels!r} "
                      "(DICOM tree), class sub-folders, or an .npz file")


def _files(root: Path) -> tuple[list[Path], int]:
    files, hidden = [], 0
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            hidden += p.is_file()
            continue
        if p.is_file():
            files.append(p)
    return files, hidden


def scan_dicom_tree(source: Path, labels: str) -> Scan:
    files, hidden = _files(source)
    labels_path = (source / labels).resolve()
    items = [Item(p, p.relative_to(source).as_posix()) for p in files if p.resolve() != labels_path]
    return Scan("dicom", items=items, skipped_hidden=hidden)


def scan_class_folders(source: Path) -> Scan:
    files, hidden = _files(source)
    scan = Scan("folders", skipped_hidden=hidden)
    for p in files:
        rel = p.relative_to(source)
        if len(rel.parts) < 2:
            scan.quarantined.append((rel.as_posix(), "not_in_class_folder: file at the source root; "
                                                     "images must sit in a folder named after their class"))
        else:
            scan.items.append(Item(p, rel.as_posix(), label=rel.parts[0]))
    return scan


class LabelTable:
    """A labels CSV keyed by file path, SOPInstanceUID or PatientID (the first such column present)."""

    def __init__(self, path: Path):
        if not path.is_file():
            raise SourceError(f"labels file {path} not found")
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = {h.strip().lower(): h for h in (reader.fieldnames or [])}
            rows = list(reader)
        key = next((k for k in PATH_KEYS + UID_KEYS + PATIENT_KEYS if k in header), None)
        lab = next((k for k in LABEL_KEYS if k in header), None)
        if key is None or lab is None:
            raise SourceError(f"labels file {path} has columns {list(header.values())}; expected a label column "
                              f"(one of {LABEL_KEYS}) and a key column: a path relative to the source "
                              f"({PATH_KEYS}), {UID_KEYS[0]} or {PATIENT_KEYS[0]}")
        self.path = path
        self.key = "path" if key in PATH_KEYS else "sop_instance_uid" if key in UID_KEYS else "patient_id"
        self.table: dict[str, str] = {}
        for r in rows:
            k, v = (r.get(header[key]) or "").strip(), (r.get(header[lab]) or "").strip()
            if k and v:
                self.table[_norm(k) if self.key == "path" else k] = v

    def lookup(self, rel: str, meta: dict) -> str | None:
        k = _norm(rel) if self.key == "path" else meta.get(self.key, "")
        return self.table.get(k)

    def describe(self) -> str:
        sample = ", ".join(list(self.table)[:3])
        return f"{len(self.table)} rows keyed by {self.key} (e.g. {sample})"


def _norm(p: str) -> str:
    p = p.strip().replace("\\", "/")
    return p[2:] if p.startswith("./") else p


def patient_from_name(name: str, regex: re.Pattern | None) -> str | None:
    """Patient id from a file name: the regex's first group (or whole match), else None."""
    if regex is None:
        return None
    m = regex.search(name)
    if not m:
        return None
    return m.group(1) if m.groups() else m.group(0)


def npz_arrays(path: Path) -> Iterator[tuple[str, str | None, object, np.ndarray]]:
    """MedMNIST-style ``{split}_images`` / ``{split}_labels`` pairs -> (rel, split, label, image)."""
    with np.load(path) as z:
        keys = set(z.files)
        prefixes = sorted({k[: -len("_images")] for k in keys if k.endswith("_images")})
        if not prefixes:
            raise SourceError(f"{path} holds {sorted(keys)}; expected MedMNIST-style <split>_images and "
                              "<split>_labels arrays")
        for pre in prefixes:
            images, labels = z[f"{pre}_images"], z.get(f"{pre}_labels")
            if labels is None or len(labels) != len(images):
                raise SourceError(f"{path}: {pre}_images has no matching {pre}_labels of the same length")
            labels = np.asarray(labels).reshape(len(images), -1)
            if labels.shape[1] != 1:
                raise SourceError(f"{path}: {pre}_labels has shape {labels.shape}; expected one label per image")
            split = pre if pre in ("train", "val", "test") else None
            for i in range(len(images)):
                yield f"{path.name}:{pre}_images[{i}]", split, labels[i, 0].item(), images[i]
