"""What prepare would do with the configured source, in seconds and without decoding a pixel: the kind,
where labels come from, classes with counts per split, where the split comes from, patients and images per
patient, files that would be quarantined (as far as names, CSVs and DICOM headers tell) and every warning.
Run it before a long `dvc repro`; it takes the same --params and -S overrides as the stages:

    python -m pipeline.inspect -S data.source=/data/chest_xray
"""
from __future__ import annotations

import re
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.seeding import stage_rng
from imaging.decode import IMAGE_SUFFIXES
from imaging.ingest import _class_order, patient_id_order, patient_ids
from imaging.sources import HEADER_MODES, SourceConfig, SourceError, npz_labels, scan, split_column_vs_folders
from imaging.split import SPLITS, assign_splits, keep_patients
from pipeline.params import parse_stage_args


@dataclass
class _Entry:  # what patient_ids() needs of a record, without pixels
    rel: str
    patient: str | None
    meta: dict = field(default_factory=dict)
    label_name: str | None = None
    source_split: str | None = None


def read_header(path: Path) -> tuple[dict | None, str | None]:
    """PatientID and SOPInstanceUID of a DICOM file without its pixel data; (None, reason) when unreadable."""
    import pydicom

    if path.stat().st_size == 0:
        return None, "empty_file: the file is empty (0 bytes)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID", "SOPInstanceUID"])
    except Exception as e:  # not DICOM, or a cut header: prepare says which when it decodes
        return None, f"not_dicom_or_unreadable: {type(e).__name__}"
    return {"patient_id": str(ds.get("PatientID", "") or "").strip(),
            "sop_instance_uid": str(ds.get("SOPInstanceUID", "") or "")}, None


def header_mode(found) -> str | None:
    """The DICOM header field (PatientID, SOPInstanceUID) that keys the labels CSV, if one does."""
    return next((mode for mode in HEADER_MODES if found.table is not None and mode in found.labels_from["key_matches"]),
                None)


def label_from_table(entry: _Entry, table, mode: str) -> tuple[_Entry | None, str | None]:
    """The entry's label (and patient and split, when the CSV has them) from the labels CSV rows its DICOM
    header matches; (None, reason) when prepare would quarantine it."""
    rows = table.lookup_meta(mode, entry.meta)
    if not rows:
        return None, f"no_label: {mode} {entry.meta.get(mode)!r} is not in the labels CSV"
    entry.label_name, reason = table.resolve(rows, f"{mode} {entry.meta.get(mode)!r}")
    if reason:
        return None, reason
    if "patient" in table.columns:
        entry.patient = next((row.patient for row in rows if row.patient), None)
    if "split" in table.columns:
        entry.source_split, reason = table.split_of(rows, f"{mode} {entry.meta.get(mode)!r}")
        if reason:
            return None, reason
    return entry, None


def item_entry(item, found, mode: str | None, need_header: bool, headers: bool) -> tuple[_Entry | None, str | None]:
    """One file of the source as an entry, or (None, reason) when prepare would quarantine it."""
    entry = _Entry(item.rel, item.patient, label_name=item.label, source_split=item.split)
    is_dicom = item.path.suffix.lower() not in IMAGE_SUFFIXES
    if is_dicom and need_header:
        meta, reason = read_header(item.path)
        if reason:
            return None, reason
        entry.meta = meta
    elif not is_dicom and mode is not None:
        return None, f"no_label: labels are keyed by the DICOM {mode}, and this is no DICOM"
    elif item.path.stat().st_size == 0:
        return None, "empty_file: the file is empty (0 bytes)"
    if mode is None:
        return entry, None
    if not headers:
        entry.label_name = "?"
        return entry, None
    return label_from_table(entry, found.table, mode)


def collect_entries(source: Path, data: dict, headers: bool,
                    order: tuple[str, ...]) -> tuple[object, list[_Entry], list[tuple[str, str]]]:
    """The scanned source, its usable entries and the (file, reason) pairs quarantined before decoding; ``order``:
    data.patient_id_from, checked (DICOM headers are read when it needs PatientID)."""
    found = scan(source, SourceConfig.from_params(data))
    quarantine = list(found.quarantined)
    if found.kind == "npz":
        entries = [_Entry(f"{source.name}[{i}]", None, label_name=label, source_split=split)
                   for i, (split, label) in enumerate(npz_labels(source))]
        return found, entries, quarantine
    mode = header_mode(found)
    # PatientID is wanted for a file unless its CSV row gives the patient and csv comes before dicom (as prepare)
    csv_first = "csv" in order and "dicom" in order and order.index("csv") < order.index("dicom")
    entries = []
    for item in found.items:
        need_header = headers and (mode is not None or ("dicom" in order and not (csv_first and item.patient)))
        entry, reason = item_entry(item, found, mode, need_header, headers)
        if entry is None:
            quarantine.append((item.rel, reason))
        else:
            entries.append(entry)
    return found, entries, quarantine


def source_plan(data: dict, found, entries: list[_Entry], quarantine: list[tuple[str, str]],
                classes: list[str]) -> dict:
    """The plan's first part: the source, its files, what is quarantined before decoding (counted by reason,
    one example each) and the classes."""
    plan: dict = {"source": str(data["source"]), "kind": found.kind, "labels_from": found.labels_from,
                  "files": len(entries) + len(quarantine), "usable_before_decoding": len(entries),
                  "quarantine_before_decoding": dict(sorted(Counter(reason.split(":")[0]
                                                                    for _, reason in quarantine).items())),
                  "quarantine_examples": {}, "skipped_hidden_files": found.skipped_hidden,
                  "published_split": found.published_split, "classes": classes, "warnings": list(found.warnings)}
    for rel, reason in quarantine:
        plan["quarantine_examples"].setdefault(reason.split(":")[0], f"{rel}: {reason}")
    return plan


def drop_train_fraction(plan: dict, data: dict, seed: int, rels: list[str], patients: list, pid_from: list,
                        labels: np.ndarray, splits: np.ndarray) -> tuple[list, list, np.ndarray, np.ndarray]:
    """With data.train_fraction below 1, the training patients prepare leaves out, left out here too."""
    fraction = float(data.get("train_fraction", 1.0))
    if fraction == 1.0:
        return patients, pid_from, labels, splits
    train = np.flatnonzero(splits == "train")
    keep = keep_patients([patients[i] for i in train], labels[train], [rels[i] for i in train], fraction,
                         stage_rng(seed, "prepare", "train_fraction"))
    mask = np.ones(len(rels), bool)
    mask[train[~keep]] = False
    plan["train_fraction"] = {"fraction": fraction, "train_images_dropped": int((~keep).sum())}
    return ([patient for patient, kept in zip(patients, mask) if kept],
            [origin for origin, kept in zip(pid_from, mask) if kept], labels[mask], splits[mask])


def split_counts(patients: list, labels: np.ndarray, splits: np.ndarray, classes: list[str]) -> dict:
    """split -> images, patients and images per class."""
    return {split: {"images": int((splits == split).sum()),
                    "patients": len({patient for patient, where in zip(patients, splits) if where == split}),
                    **{name: int(((splits == split) & (labels == i)).sum()) for i, name in enumerate(classes)}}
            for split in SPLITS}


def patient_counts(patients: list, pid_from: list) -> dict:
    per_patient = np.array(sorted(Counter(patients).values()))
    return {"count": len(per_patient), "id_from": dict(Counter(pid_from)),
            "images_per_patient": {"min": int(per_patient.min()), "median": float(np.median(per_patient)),
                                   "max": int(per_patient.max())}}


def inspect_source(source: Path, data: dict, fractions: dict, seed: int, headers: bool = True) -> dict:
    """The plan as data: everything prepare would decide before decoding (for printing and for tests)."""
    order = patient_id_order(data.get("patient_id_from"))
    found, entries, quarantine = collect_entries(source, data, headers, order)
    classes = _class_order((entry.label_name for entry in entries), data.get("classes") or [])
    plan = source_plan(data, found, entries, quarantine, classes)
    if header_mode(found) and headers and "split" in found.table.columns and data["split_from"] != "patients":
        plan["published_split"] += split_column_vs_folders([e.rel for e in entries], [e.source_split for e in entries],
                                                           found.table.columns["split"])
    unknown = [entry for entry in entries if entry.label_name not in classes]
    if unknown:
        plan["quarantine_before_decoding"]["unknown_label"] = len(unknown)
        entries = [entry for entry in entries if entry.label_name in classes]
    if not entries:
        raise SourceError(f"nothing usable in the source: {plan['quarantine_before_decoding']}; examples: "
                          f"{list(plan['quarantine_examples'].values())[:3]}")
    regex = re.compile(data["patient_regex"]) if data.get("patient_regex") else None
    patients, pid_from = patient_ids(entries, regex, order)
    labels = np.array([classes.index(entry.label_name) for entry in entries])
    rels = [entry.rel for entry in entries]
    # no pixel hashes before decoding: identical images are not merged here (prepare merges them)
    splits, info = assign_splits(patients, labels, rels, [entry.source_split for entry in entries],
                                 fractions, stage_rng(seed, "prepare", "split"), split_from=data["split_from"],
                                 min_val_images=int(data["min_val_images"]), class_names=classes)
    plan["warnings"] += info.pop("warnings")
    plan["split_origin"] = info["origin"]
    plan["split_from"] = info["split_from"]
    if "patients_in_several_published_splits" in info:
        plan["patients_in_several_published_splits"] = info["patients_in_several_published_splits"]
    patients, pid_from, labels, splits = drop_train_fraction(plan, data, seed, rels, patients, pid_from, labels, splits)
    plan["splits"] = split_counts(patients, labels, splits, classes)
    plan["patients"] = patient_counts(patients, pid_from)
    if pid_from.count("file"):
        plan["warnings"].append(f"{pid_from.count('file')} images have no patient id (none from data.patient_id_from "
                                f"{list(order)}{'' if headers else ', DICOM headers not read'}): each stands alone, "
                                "so one patient's images may straddle splits")
    return plan


def render(plan: dict) -> str:
    labels_from = plan["labels_from"]
    if labels_from.get("from") == "labels CSV":
        labels = (f"labels CSV {', '.join(labels_from['files'])} ({labels_from['rows']} rows): key column "
                  f"{labels_from['key_column']!r} matched by {labels_from['key_matches']}, label column "
                  f"{labels_from['label_column']!r}"
                  + (f", map {labels_from['label_map']}" if labels_from.get("label_map") else "")
                  + (f", patient column {labels_from['patient_column']!r}" if labels_from.get("patient_column")
                     else "")
                  + (f", split column {labels_from['split_column']!r}" if labels_from.get("split_column") else ""))
    else:
        labels = labels_from.get("from", "?")
    out = [f"source    {plan['source']}  (kind: {plan['kind']})", f"labels    {labels}",
           f"files     {plan['files']} ({plan['skipped_hidden_files']} hidden skipped); "
           f"{plan['usable_before_decoding']} usable before decoding"]
    split_from = ("published: " + str(plan["published_split"]) if plan["split_from"] == "published"
                  else "by patient (stratified by label, seeded)")
    out.append(f"split     {split_from}")
    for split, origin in plan["split_origin"].items():
        if origin not in ("published", "patients"):
            out.append(f"          {split}: {origin}")
    if plan.get("patients_in_several_published_splits"):
        out.append(f"          {plan['patients_in_several_published_splits']} patient ids in more than one published split")
    classes = plan["classes"]
    width = max(12, *(len(name) + 2 for name in classes))
    out.append("")
    out.append(f"{'':{width}}" + "".join(f"{split:>9}" for split in SPLITS) + f"{'total':>9}")
    for name in classes:
        values = [plan["splits"][split][name] for split in SPLITS]
        out.append(f"{name:{width}}" + "".join(f"{value:>9}" for value in values) + f"{sum(values):>9}")
    for row in ("images", "patients"):
        values = [plan["splits"][split][row] for split in SPLITS]
        out.append(f"{row:{width}}" + "".join(f"{value:>9}" for value in values)
                   + (f"{sum(values):>9}" if row == "images" else ""))
    out.append("")
    patients = plan["patients"]
    out.append(f"patients  {patients['count']} (id from {patients['id_from']}); images per patient min "
               f"{patients['images_per_patient']['min']}, median {patients['images_per_patient']['median']:g}, "
               f"max {patients['images_per_patient']['max']}")
    if plan.get("train_fraction"):
        out.append(f"train     data.train_fraction={plan['train_fraction']['fraction']}: "
                   f"{plan['train_fraction']['train_images_dropped']} training images left out")
    quarantined = plan["quarantine_before_decoding"]
    out.append(f"quarantine before decoding: {sum(quarantined.values())} {quarantined if quarantined else ''}".rstrip())
    for example in plan["quarantine_examples"].values():
        out.append(f"          e.g. {example}")
    out.append("          (files that fail to decode, blank images and exact duplicates show up in prepare)")
    if plan["warnings"]:
        out.append("warnings")
        out += [f"  - {warning}" for warning in plan["warnings"]]
    else:
        out.append("warnings  none")
    return "\n".join(out)


def main(argv=None) -> dict:
    args = parse_stage_args(__doc__, argv, add_arguments=lambda ap: ap.add_argument(
        "--no-headers", action="store_true", help="do not read DICOM headers (PatientID, SOPInstanceUID)"))
    params = args.params
    try:
        plan = inspect_source(args.path(params["data"]["source"]), params["data"], params["prepare"]["split"],
                              params["base"]["seed"], headers=not args.extra.no_headers)
    except (SourceError, ValueError) as e:
        print(f"inspect: prepare would stop here: {e}", file=sys.stderr)
        raise SystemExit(1) from e
    print(render(plan))
    return plan


if __name__ == "__main__":
    main()
