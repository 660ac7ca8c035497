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
from imaging.pixels import LOW_SPAN, BlankImage, Intensity, PixelConfig, prepare_pixels_span
from imaging.sources import (HEADER_MODES, Item, Scan, SourceError, npz_arrays, patient_from_path,
                             split_column_vs_folders)
from imaging.split import assign_splits, duplicates_across, keep_patients

LOW_SPAN_WARN = 0.02  # share of low-contrast images (pixels.LOW_SPAN) above which the summary warns
ONE_PATIENT_WARN = (0.1, 50)  # one patient id on more than this share of at least this many images: the summary warns
INDEX_COLUMNS = ("row", "path", "patient_id", "label", "label_name", "split", "sha256", "patient_id_from",
                 "modality", "photometric", "bits_stored", "transfer_syntax", "orig_height", "orig_width", "voi")


@dataclass
class Record:
    rel: str
    image: np.ndarray  # (size, size) float16 in [-1, 1]
    meta: dict
    label_name: str | None = None
    source_split: str | None = None
    patient: str | None = None  # from the labels CSV's patient column


@dataclass
class Dataset:
    images: np.ndarray  # (N, 1, size, size) float16
    index: list[dict]  # one row per image, INDEX_COLUMNS
    quarantine: list[tuple[str, str]]  # (path, reason)
    classes: list[str]
    summary: dict = field(default_factory=dict)


def _finish(image: np.ndarray, meta: dict, rel: str, label: str | None = None,
            split: str | None = None, patient: str | None = None) -> Record:
    img16 = image.astype(np.float16)
    meta["sha256"] = hashlib.sha256(img16.tobytes()).hexdigest()
    return Record(rel, img16, meta, label, split, patient)


def ingest_file(item: Item, cfg: PixelConfig) -> Record | tuple[str, str]:
    """Decode and prepare one file; a (rel, reason) pair when it must be quarantined."""
    try:
        dec = read_any(item.path)
        image, voi, span = prepare_pixels_span(dec.stored, dec.intensity, cfg)
    except Quarantined as q:
        return item.rel, str(q)
    except BlankImage as e:
        return item.rel, f"blank_image: nothing to show, {e}"
    except Exception as e:  # a decoder failing in a way nobody foresaw must not stop the stage
        return item.rel, f"decode_error: unexpected {type(e).__name__}: {e}"
    dec.meta["voi"], dec.meta["span"] = voi, span
    return _finish(image, dec.meta, item.rel, item.label, item.split, item.patient)


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


def npz_image(arr: np.ndarray, rel: str) -> tuple[np.ndarray, Intensity, int]:
    """One image of an npz array -> (2-D stored values, how to show them, bits).

    Shapes: (H, W) grey; (H, W, 1) squeezed; (H, W, 3) or (H, W, 4) colour, collapsed to grey (luma).
    Values, by dtype: uint8 over 0..255; uint16 like a 16-bit PNG (its own stored range, see pixels.Intensity);
    bool over 0..1; floats whose values all lie in [0, 1] as they are. Anything else (volumes, channel-first
    arrays, signed integers, floats outside [0, 1], other types) has no one reading and raises SourceError.
    """
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))):
        raise SourceError(f"{rel} has shape {arr.shape}; expected (H, W) grey, (H, W, 1), or (H, W, 3|4) colour "
                          "images: 3-D volumes and channel-first (C, H, W) arrays are not read")
    if arr.dtype == np.uint8:
        intensity, bits = Intensity(value_range=(0.0, 255.0)), 8
    elif arr.dtype == np.uint16:
        intensity, bits = Intensity(value_range=(0.0, 65535.0)), 16
    elif arr.dtype == np.bool_:
        intensity, bits = Intensity(value_range=(0.0, 1.0)), 1
    else:
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (np.nan, np.nan)
        if not (arr.dtype.kind == "f" and 0.0 <= lo and hi <= 1.0):
            raise SourceError(f"{rel} is {arr.dtype} with values in [{lo:g}, {hi:g}]; expected uint8 (0..255), "
                              "uint16, bool, or floats in [0, 1]: rescale the arrays to one of these")
        intensity, bits = Intensity(value_range=(0.0, 1.0)), arr.dtype.itemsize * 8
    return (luma(arr) if arr.ndim == 3 else arr), intensity, bits


def ingest_npz(path: Path, cfg: PixelConfig) -> Iterator[Record | tuple[str, str]]:
    """MedMNIST-style arrays (:func:`npz_image` says which are read, and how): same resampling path."""
    for rel, split, label, arr in npz_arrays(path):
        arr, intensity, bits = npz_image(np.asarray(arr), rel)
        try:
            image, voi, span = prepare_pixels_span(arr, intensity, cfg)
        except BlankImage as e:
            yield rel, f"blank_image: nothing to show, {e}"
            continue
        meta = {"patient_id": "", "modality": "", "photometric": "npz", "bits_stored": bits,
                "transfer_syntax": "", "orig_height": arr.shape[0], "orig_width": arr.shape[1], "voi": voi,
                "span": span}
        yield _finish(image, meta, rel, str(label), split)


def _class_order(names: Iterable[str], classes: Sequence[str]) -> list[str]:
    if classes:
        return [str(c) for c in classes]
    found = sorted(set(names))
    if all(re.fullmatch(r"-?\d+", n) for n in found):
        found.sort(key=int)
    return found


PATIENT_ID_FROM = ("csv", "dicom", "regex")   # data.patient_id_from's default order and its only values
PATIENT_ID_ADVICE = {  # what to change when one id, from this source, is on too many images to be one patient
    "csv": "check data.patient_column, or take the id from elsewhere in data.patient_id_from",
    "dicom": "set data.patient_column or data.patient_regex to the real patient id and list csv or regex before "
             "dicom in data.patient_id_from (e.g. [csv, regex, dicom])",
    "regex": "set data.patient_regex to capture the real patient id"}


def patient_id_order(order) -> tuple[str, ...]:
    """data.patient_id_from checked: a list of some of csv, dicom and regex, each once; None (a params file from
    before it): the default order."""
    if order is None:
        return PATIENT_ID_FROM
    if not isinstance(order, (list, tuple)) or not order or set(order) - set(PATIENT_ID_FROM) \
            or len(set(order)) != len(order):
        raise SourceError(f"data.patient_id_from must be a list of some of {list(PATIENT_ID_FROM)}, each once, in "
                          f"the order to try them (e.g. [csv, regex, dicom]); got {order!r}")
    return tuple(order)


def patient_ids(records: Sequence, regex: re.Pattern | None,
                order: Sequence[str] = PATIENT_ID_FROM) -> tuple[list[str], list[str]]:
    """Each record's patient id and where it came from: the first of ``order`` (data.patient_id_from) that gives
    one, of the labels CSV's patient column (csv), the DICOM PatientID (dicom) and data.patient_regex on the
    relative path (regex); else the file itself (it stands alone)."""
    look = {"csv": lambda r: r.patient or "",
            "dicom": lambda r: (r.meta.get("patient_id") or "") if hasattr(r, "meta") else "",
            "regex": lambda r: patient_from_path(r.rel, regex) or ""}
    order = patient_id_order(order)
    pids, froms = [], []
    for r in records:
        pid, src = next(((pid, src) for src in order if (pid := look[src](r))), (r.rel, "file"))
        pids.append(pid)
        froms.append(src)
    return pids, froms


def assemble(scan_result: Scan, records: Iterable[Record | tuple[str, str]], *, classes: Sequence[str],
             patient_regex: str | None, fractions: Mapping[str, float], split_rng: np.random.Generator,
             patient_id_from: Sequence[str] = PATIENT_ID_FROM,
             size: int, split_from: str = "auto", min_val_images: int = 0, train_fraction: float = 1.0,
             fraction_rng: np.random.Generator | None = None) -> Dataset:
    """Labels, patient ids, duplicates and the split for decoded records; quarantines what has no label."""
    quarantine = list(scan_result.quarantined)
    table = scan_result.table  # labels keyed by a DICOM header field: resolved now
    mode = next((m for m in HEADER_MODES if table is not None and m in scan_result.labels_from["key_matches"]), None)
    regex = re.compile(patient_regex) if patient_regex else None
    patient_id_from = patient_id_order(patient_id_from)   # checked before the images are decoded
    kept: list[Record] = []
    n_decoded, seen_keys = 0, []
    for r in records:
        if isinstance(r, tuple):
            quarantine.append(r)
            continue
        n_decoded += 1
        if table is not None:
            rows = table.lookup_meta(mode, r.meta)
            if len(seen_keys) < 3:
                seen_keys.append(str(r.meta.get(mode, "")))
            if not rows:
                quarantine.append((r.rel, f"no_label: {mode} {r.meta.get(mode, '')!r} is not in "
                                          f"{', '.join(p.name for p in table.paths)}"))
                continue
            r.label_name, reason = table.resolve(rows, f"{mode} {r.meta.get(mode)!r}")
            if reason:
                quarantine.append((r.rel, reason))
                continue
            if "patient" in table.columns:
                r.patient = next((x.patient for x in rows if x.patient), None)
            if "split" in table.columns:
                r.source_split, reason = table.split_of(rows, f"{mode} {r.meta.get(mode)!r}")
                if reason:
                    quarantine.append((r.rel, reason))
                    continue
        kept.append(r)
    if table is not None and n_decoded and not kept:
        raise SourceError(f"{', '.join(p.name for p in table.paths)} matches none of the {n_decoded} readable images: "
                          f"its column {table.columns['key']!r} holds values like {list(table.rows)[:3]}; expected "
                          f"the {mode} of the files, like {seen_keys}")
    published = scan_result.published_split
    if table is not None and "split" in table.columns and split_from != "patients":   # beside split folders?
        published += split_column_vs_folders([r.rel for r in kept], [r.source_split for r in kept],
                                             table.columns["split"])
    class_names = _class_order((r.label_name for r in kept), classes)
    lookup = {c: i for i, c in enumerate(class_names)}
    usable = []
    for r in kept:
        if r.label_name not in lookup:
            quarantine.append((r.rel, f"unknown_label: {r.label_name!r} is not among data.classes {class_names}"))
        else:
            usable.append(r)
    if not usable:
        raise SourceError(f"no usable image in the source: {len(quarantine)} inputs quarantined "
                          f"({dict(Counter(q[1].split(':')[0] for q in quarantine))}); expected readable "
                          "DICOM/PNG/JPEG/TIFF images with labels")

    patients, pid_from = patient_ids(usable, regex, patient_id_from)
    labels = np.array([lookup[r.label_name] for r in usable])
    hashes = [r.meta["sha256"] for r in usable]
    splits, split_info = assign_splits(patients, labels, hashes, [r.source_split for r in usable], fractions,
                                       split_rng, split_from=split_from, min_val_images=min_val_images,
                                       class_names=class_names)
    warnings = list(scan_result.warnings) + split_info.pop("warnings")
    fraction_info = None
    if train_fraction != 1.0:
        tr = np.flatnonzero(splits == "train")
        keep_tr = keep_patients([patients[i] for i in tr], labels[tr], [hashes[i] for i in tr], float(train_fraction),
                                fraction_rng if fraction_rng is not None else np.random.default_rng(0))
        drop = set(tr[~keep_tr].tolist())
        fraction_info = {"fraction": float(train_fraction),
                         "train_patients_kept": len({patients[i] for i in tr[keep_tr]}),
                         "train_patients_dropped": len({patients[i] for i in drop}),
                         "train_images_dropped": len(drop)}
        for i in sorted(drop):
            quarantine.append((usable[i].rel, f"train_fraction: left out to keep data.train_fraction={train_fraction} "
                                              "of the training patients"))
        keep = np.array([i not in drop for i in range(len(usable))])
        usable = [r for r, k in zip(usable, keep) if k]
        patients = [p for p, k in zip(patients, keep) if k]
        pid_from = [p for p, k in zip(pid_from, keep) if k]
        hashes = [h for h, k in zip(hashes, keep) if k]
        labels, splits = labels[keep], splits[keep]

    images = np.stack([r.image for r in usable])[:, None]
    index = []
    for i, r in enumerate(usable):
        m = r.meta
        index.append({"row": i, "path": r.rel, "patient_id": patients[i], "label": int(labels[i]),
                      "label_name": r.label_name, "split": splits[i], "sha256": m["sha256"],
                      "patient_id_from": pid_from[i], **{k: m.get(k, "") for k in INDEX_COLUMNS[8:]}})
    dup_groups = sum(1 for c in Counter(hashes).values() if c > 1)
    dup_across = duplicates_across(splits, hashes)
    if dup_across:
        warnings.append(f"{dup_across} groups of identical images sit in more than one split (kept as published)")
    low = sum(1 for r in usable if r.meta.get("span", 2.0) < LOW_SPAN)
    low_share = round(low / len(usable), 4)
    if low_share > LOW_SPAN_WARN:
        warnings.append(f"{low} of {len(usable)} prepared images ({low_share:.0%}) span less than a quarter of [-1, 1]: "
                        "the VOI does not fit their values (a 16-bit file windowed over its full range?). Look at "
                        "them, and set prepare.voi (percentile or minmax) to change it")
    top, n_top = Counter(patients).most_common(1)[0]
    if len(usable) >= ONE_PATIENT_WARN[1] and n_top > ONE_PATIENT_WARN[0] * len(usable):
        source = pid_from[patients.index(top)]
        warnings.append(f"patient id {top!r} (from {source}) is on {n_top} of {len(usable)} images "
                        f"({n_top / len(usable):.0%}), all in one split: if it is not one patient (an anonymiser's "
                        f"constant PatientID, a site code), {PATIENT_ID_ADVICE[source]} (data.patient_id_from now "
                        f"{list(patient_id_from)})")
    inverse = sum(1 for r in usable if str(r.meta.get("photometric", "")).startswith("MONOCHROME2 INVERSE"))
    if inverse:
        warnings.append(f"{inverse} images are MONOCHROME2 with Presentation LUT Shape INVERSE: shown inverted, as "
                        "the standard says (index.csv's photometric column names them). If the report's grid shows "
                        "them as negatives, their header is wrong")
    raw = sum(1 for r in usable if str(r.meta.get("photometric", "")).endswith("FOR PROCESSING"))
    if raw:
        warnings.append(f"{raw} of {len(usable)} images are 'FOR PROCESSING' DICOMs (Presentation Intent Type): raw "
                        "detector data, not processed for viewing, so they look unlike 'FOR PRESENTATION' images "
                        "(PS3.3 C.8.11.1.1.1; index.csv's photometric column names them). Mixed with those, the GAN "
                        "and the classifiers learn two looks; use one kind")
    if pid_from.count("file"):
        warnings.append(f"{pid_from.count('file')} images have no patient id (none from data.patient_id_from "
                        f"{list(patient_id_from)}): each is treated as its own patient, so images of one patient may "
                        "straddle splits")
    summary = {
        "kind": scan_result.kind, "size": size,
        "found": len(usable) + len(quarantine), "prepared": len(usable), "quarantined": len(quarantine),
        "quarantine_reasons": dict(sorted(Counter(q[1].split(":")[0] for q in quarantine).items())),
        "skipped_hidden_files": scan_result.skipped_hidden, "labels_from": scan_result.labels_from,
        "classes": class_names,
        "class_counts": {c: int((labels == i).sum()) for i, c in enumerate(class_names)},
        "split_from": _describe_split(split_info, published),
        "split_origin": split_info["origin"],
        **({"published_split": split_info["published"],
            "patients_in_several_published_splits": split_info["patients_in_several_published_splits"]}
           if "published" in split_info else {}),
        "splits": {s: {"images": int((splits == s).sum()), "patients": len({p for p, t in zip(patients, splits) if t == s}),
                       **{c: int(((splits == s) & (labels == i)).sum()) for i, c in enumerate(class_names)}}
                   for s in ("train", "val", "test")},
        **({"train_fraction": fraction_info} if fraction_info else {}),
        "patients": len(set(patients)), "patient_id_from": dict(Counter(pid_from)),
        "duplicate_groups": dup_groups, "duplicate_groups_across_splits": dup_across,
        "voi": dict(Counter(r.meta.get("voi", "") for r in usable)),
        "low_contrast_images": low, "low_contrast_share": low_share,
    }
    padded = sum(1 for r in usable if r.meta.get("padding_pixels"))
    if padded:  # DICOM Pixel Padding Value: those pixels show black and count in no VOI (decode.fill_padding)
        summary["pixel_padding_images"] = padded
    if warnings:
        summary["warnings"] = warnings
    return Dataset(images, index, quarantine, class_names, summary)


def _describe_split(info: dict, published: str | None) -> str:
    """One line for the summary and the report: where each split comes from."""
    if info["split_from"] == "patients":
        return "patients (stratified by label, seeded)" + (f"; the published split ({published}) is ignored"
                                                            if published else "")
    parts = [f"published ({published})"]
    carved = [s for s, o in info["origin"].items() if o != "published"]
    if carved:
        parts.append(f"{' and '.join(carved)} carved from train by patient")
    if info.get("patients_in_several_published_splits"):
        parts.append(f"{info['patients_in_several_published_splits']} patient ids in more than one published split")
    return "; ".join(parts)
