"""From a source to a labelled, split, quarantined image set: decoding on all cores, labels, patients,
duplicates and the split. Returns arrays and tables; writing them is the caller's business."""
from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import re
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from imaging.decode import Quarantined, luma, read_any
from imaging.pixels import BlankImage, Intensity, PixelConfig, prepare_pixels
from imaging.sources import (
    Item,
    LabelTable,
    Scan,
    SourceError,
    detect_kind,
    npz_arrays,
    patient_from_name,
    scan_class_folders,
    scan_dicom_tree,
)
from imaging.split import split_by_patient

INDEX_COLUMNS = ("row", "path", "patient_id", "label", "label_name", "split", "sha256", "patient_id_from",
                 "modality", "photometric", "bits_stored", "transfer_syntax", "orig_height", "orig_width", "voi")


@dataclass
class Record:
    rel: str
    image: np.ndarray  # (size, size) float16 in [-1, 1]
    meta: dict
    label_name: str | None = None
    source_split: str | None = None


@dataclass
class Dataset:
    images: np.ndarray  # (N, 1, size, size) float16
    index: list[dict]  # one row per image, INDEX_COLUMNS
    quarantine: list[tuple[str, str]]  # (path, reason)
    classes: list[str]
    summary: dict = field(default_factory=dict)


def _finish(image: np.ndarray, meta: dict, rel: str, label: str | None = None,
            split: str | None = None) -> Record:
    img16 = image.astype(np.float16)
    meta["sha256"] = hashlib.sha256(img16.tobytes()).hexdigest()
    return Record(rel, img16, meta, label, split)


def ingest_file(item: Item, cfg: PixelConfig) -> Record | tuple[str, str]:
    """Decode and prepare one file; a (rel, reason) pair when it must be quarantined."""
    try:
        dec = read_any(item.path)
        image, voi = prepare_pixels(dec.stored, dec.intensity, cfg)
    except Quarantined as q:
        return item.rel, str(q)
    except BlankImage as e:
        return item.rel, f"blank_image: nothing to show, {e}"
    except Exception as e:  # a decoder failing in a way nobody foresaw must not stop the stage
        return item.rel, f"decode_error: unexpected {type(e).__name__}: {e}"
    dec.meta["voi"] = voi
    return _finish(image, dec.meta, item.rel, item.label)


def _ingest_star(args):
    return ingest_file(*args)


def ingest_many(items: Sequence[Item], cfg: PixelConfig, workers: int = 0) -> Iterator[Record | tuple[str, str]]:
    """:func:`ingest_file` over ``items`` on ``workers`` processes (0: all cores), results in order."""
    workers = workers or len(os.sched_getaffinity(0))
    jobs = [(it, cfg) for it in items]
    if workers <= 1 or len(jobs) < 4:
        yield from map(_ingest_star, jobs)
        return
    chunk = max(1, min(32, len(jobs) // (workers * 8)))
    with single_threaded_children(), mp.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(_ingest_star, jobs, chunksize=chunk)


@contextmanager
def single_threaded_children():
    """Environment for spawned decoding workers.

    One BLAS/OpenMP thread each: one process per core already uses every core, and BLAS pools fighting
    over them make the small resampling products many times slower. And glibc's malloc keeps freed
    multi-megabyte buffers on its heap instead of unmapping them: otherwise every decoded frame is a
    fresh mmap whose pages the kernel faults in and zeroes, which costs as much as the decoding itself.
    """
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "MALLOC_MMAP_THRESHOLD_": str(128 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}
    saved = {n: os.environ.get(n) for n in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for n, v in saved.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


def ingest_npz(path: Path, cfg: PixelConfig) -> Iterator[Record | tuple[str, str]]:
    """MedMNIST arrays are already 8-bit display images: full-range VOI, same resampling path."""
    for rel, split, label, arr in npz_arrays(path):
        arr = np.asarray(arr)
        if arr.ndim == 3:  # (H, W, C) colour
            arr = luma(arr)
        bits = 16 if arr.dtype == np.uint16 else 8
        try:
            image, voi = prepare_pixels(arr, Intensity(value_range=(0.0, 2.0**bits - 1)), cfg)
        except BlankImage as e:
            yield rel, f"blank_image: nothing to show, {e}"
            continue
        meta = {"patient_id": "", "modality": "", "photometric": "npz", "bits_stored": bits,
                "transfer_syntax": "", "orig_height": arr.shape[0], "orig_width": arr.shape[1], "voi": voi}
        yield _finish(image, meta, rel, str(label), split)


def scan(source: Path, kind: str, labels: str) -> Scan:
    kind = detect_kind(source, labels) if kind == "auto" else kind
    if kind == "dicom":
        return scan_dicom_tree(source, labels)
    if kind == "folders":
        return scan_class_folders(source)
    if kind == "npz":
        return Scan("npz")
    raise SourceError(f"data.kind must be auto, dicom, folders or npz; got {kind!r}")


def _class_order(names: Iterable[str], classes: Sequence[str]) -> list[str]:
    if classes:
        return [str(c) for c in classes]
    found = sorted(set(names))
    if all(re.fullmatch(r"-?\d+", n) for n in found):
        found.sort(key=int)
    return found


def assemble(source: Path, scan_result: Scan, records: Iterable[Record | tuple[str, str]], *,
             labels_file: str, classes: Sequence[str], patient_regex: str | None,
             fractions: Mapping[str, float], rng: np.random.Generator, size: int) -> Dataset:
    """Labels, patient ids, duplicates and split for decoded records; quarantines what has no label."""
    quarantine = list(scan_result.quarantined)
    table = LabelTable(source / labels_file) if scan_result.kind == "dicom" else None
    regex = re.compile(patient_regex) if patient_regex else None
    kept: list[Record] = []
    n_decoded = 0
    for r in records:
        if isinstance(r, tuple):
            quarantine.append(r)
            continue
        n_decoded += 1
        if table is not None:
            r.label_name = table.lookup(r.rel, r.meta)
            if r.label_name is None:
                key = r.rel if table.key == "path" else r.meta.get(table.key, "")
                quarantine.append((r.rel, f"no_label: {table.key} {key!r} is not in {table.path.name}"))
                continue
        kept.append(r)
    if table is not None and n_decoded and not kept:
        raise SourceError(f"{table.path} matches none of the {n_decoded} readable images under {source}: it has "
                          f"{table.describe()}; expected keys like {quarantine[-1][0]!r}")
    class_names = _class_order((r.label_name for r in kept), classes)
    lookup = {c: i for i, c in enumerate(class_names)}
    usable = []
    for r in kept:
        if r.label_name not in lookup:
            quarantine.append((r.rel, f"unknown_label: {r.label_name!r} is not among data.classes {class_names}"))
        else:
            usable.append(r)
    if not usable:
        raise SourceError(f"no usable image in {source}: {len(quarantine)} inputs quarantined "
                          f"({dict(Counter(q[1].split(':')[0] for q in quarantine))}); expected readable "
                          "DICOM/PNG/JPEG images with labels")

    pid_from = []
    patients = []
    for r in usable:
        pid = r.meta.get("patient_id") or ""
        src = "dicom"
        if not pid:
            pid, src = patient_from_name(Path(r.rel).name, regex), "regex"
        if not pid:
            pid, src = r.rel, "file"  # no id anywhere: the image stands alone (and may leak, see summary)
        patients.append(pid)
        pid_from.append(src)
    labels = np.array([lookup[r.label_name] for r in usable])
    hashes = [r.meta["sha256"] for r in usable]
    source_splits = [r.source_split for r in usable]
    if all(s is not None for s in source_splits) and {"train", "val", "test"} <= set(source_splits):
        splits = np.array(source_splits)  # an npz with its own complete split is kept as published
        split_from = "source"
    else:
        splits = split_by_patient(patients, labels, hashes, fractions, rng)
        split_from = "patients"

    images = np.stack([r.image for r in usable])[:, None]
    index = []
    for i, r in enumerate(usable):
        m = r.meta
        index.append({"row": i, "path": r.rel, "patient_id": patients[i], "label": int(labels[i]),
                      "label_name": r.label_name, "split": splits[i], "sha256": m["sha256"],
                      "patient_id_from": pid_from[i], **{k: m.get(k, "") for k in INDEX_COLUMNS[8:]}})
    dup_groups = sum(1 for c in Counter(hashes).values() if c > 1)
    summary = {
        "source": str(source), "kind": scan_result.kind, "size": size,
        "found": len(usable) + len(quarantine), "prepared": len(usable), "quarantined": len(quarantine),
        "quarantine_reasons": dict(Counter(q[1].split(":")[0] for q in quarantine)),
        "skipped_hidden_files": scan_result.skipped_hidden, "classes": class_names,
        "class_counts": {c: int((labels == i).sum()) for i, c in enumerate(class_names)},
        "split_from": split_from,
        "splits": {s: {"images": int((splits == s).sum()), "patients": len({p for p, t in zip(patients, splits) if t == s}),
                       **{c: int(((splits == s) & (labels == i)).sum()) for i, c in enumerate(class_names)}}
                   for s in ("train", "val", "test")},
        "patients": len(set(patients)), "patient_id_from": dict(Counter(pid_from)),
        "duplicate_groups": dup_groups,
        "voi": dict(Counter(r.meta.get("voi", "") for r in usable)),
    }
    return Dataset(images, index, quarantine, class_names, summary)
