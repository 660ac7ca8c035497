"""Reading a source as it is published, before any pixel is decoded: which files, their labels, their
published split and (where the layout says so) their patient.

Sources: class folders (``<CLASS>/...``, or ``<split>/<CLASS>/...`` as Kermany's download is laid out), a
tree of DICOM/PNG/JPEG/TIFF files with one or more labels CSVs (their own key, label, patient and split
columns, label values mapped to classes), or a MedMNIST-style npz. Everything here reads names and CSVs
only, so ``pipeline.inspect`` can show it in seconds; a shape that cannot be what the user meant raises
:class:`SourceError` with what was found and what was expected.
"""
from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator, Mapping, Sequence

import numpy as np

from common.text import read_utf8

KINDS = ("csv", "folders", "npz")  # "dicom" is accepted as the old name of "csv"
# split folder / split column values (any case) -> split
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "validate": "val", "dev": "val", "test": "test", "testing": "test"}   # validate: MIMIC-CXR's split CSV
MASK_FOLDER = re.compile(r"(?:^|[^a-z])masks?(?:[^a-z]|$)")   # masks, lung masks, Infection Masks; not unmasked
JUNK_DIRS = {"__macosx"}  # macOS resource forks that zip archives made on a Mac carry
PATH_KEYS = ("path", "file", "filename", "file_name", "file_path", "image_path", "image", "image_index",
             "image_id", "image_name")
UID_KEYS = ("sop_instance_uid", "sopinstanceuid")
PATIENT_KEYS = ("patient_id", "patientid")
LABEL_KEYS = ("label", "class", "target", "finding", "finding_labels", "diagnosis")
SPLIT_KEYS = ("split", "subset", "partition")
PATH_MODES = ("path", "suffix", "name", "stem")  # how a key value names a file, tried in this order
HEADER_MODES = ("sop_instance_uid", "patient_id")  # keys only the DICOM header can resolve


class SourceError(ValueError):
    """The source as a whole is unusable or misconfigured (the stage stops with this message)."""


@dataclass(frozen=True)
class SourceConfig:
    """How to read a source; ``data.*`` in params.yaml."""

    kind: str = "auto"
    labels: tuple[str, ...] = ("labels.csv",)  # labels CSV(s), relative to the source
    labels_key: str | None = None  # the column naming the image; None: the first known key column
    labels_column: str | None = None  # the column holding the label; None: the first known label column
    label_map: tuple[tuple[str, str], ...] = ()  # (value, class) in order; empty: the value is the class
    patient_column: str | None = None  # patient id from the CSV (before PatientID and the regex by default)
    split_column: str | None = None  # None: a column named split/subset/partition when there is one
    patient_regex: str | None = None
    split_from: str = "auto"  # patients: published splits are not used, so a split column and folders may differ
    split_lists: tuple[tuple[str, str], ...] = ()  # (split, list file in the source); empty: NIH's when present

    def __post_init__(self):
        kind = "csv" if self.kind == "dicom" else self.kind
        if kind not in ("auto", *KINDS):
            raise SourceError(f"data.kind must be auto, csv (a tree with a labels CSV; 'dicom' also accepted), "
                              f"folders or npz; got {self.kind!r}")
        object.__setattr__(self, "kind", kind)
        wrong = [split for split, _ in self.split_lists if split not in ("train", "val", "test")]
        if wrong:
            raise SourceError(f"data.split_lists maps a split to its list file; keys must be train, val or test, "
                              f"got {wrong}")

    @classmethod
    def from_params(cls, data: Mapping) -> "SourceConfig":
        labels = data.get("labels") or "labels.csv"
        labels = (labels,) if isinstance(labels, str) else tuple(str(x) for x in labels)
        lmap, lists = data.get("label_map") or {}, data.get("split_lists") or {}
        for name, value, what in (("label_map", lmap, "label value -> class name"),
                                  ("split_lists", lists, "split -> list file")):
            if not isinstance(value, Mapping):
                raise SourceError(f"data.{name} must be a mapping of {what}, got {value!r}")
        return cls(kind=data.get("kind", "auto"), labels=labels, labels_key=data.get("labels_key") or None,
                   labels_column=data.get("labels_column") or None,
                   label_map=tuple((_value_text(k), str(v)) for k, v in lmap.items()),
                   patient_column=data.get("patient_column") or None, split_column=data.get("split_column") or None,
                   patient_regex=data.get("patient_regex") or None, split_from=data.get("split_from") or "auto",
                   split_lists=tuple((str(k), str(v)) for k, v in lists.items()))


@dataclass
class Item:
    path: Path  # absolute
    rel: str  # posix path relative to the source root: what index.csv and quarantine.csv show
    label: str | None = None  # class name, from the class folder or the labels CSV; None until the header says
    split: str | None = None  # the published split (train/val/test), None when the source has none
    patient: str | None = None  # from data.patient_column


@dataclass
class Scan:
    kind: str
    items: list[Item] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)  # (rel, reason)
    skipped_hidden: int = 0
    published_split: str | None = None  # where a published split comes from ("folders", "column 'split'", ...)
    labels_from: dict = field(default_factory=dict)  # how labels are read, for the summary and inspect
    table: "LabelTable | None" = None  # set when labels can only be resolved from the DICOM header
    warnings: list[str] = field(default_factory=list)


def _value_text(v) -> str:
    """A YAML map key or CSV cell as text: 1.0 and "1.0" alike, True as true."""
    if isinstance(v, bool):
        return str(v).lower()
    return str(v).strip()


def _norm_col(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def detect_kind(source: Path, labels: Sequence[str]) -> str:
    if source.is_file() and source.suffix.lower() == ".npz":
        return "npz"
    if not source.is_dir():
        raise SourceError(f"data source {source} is neither a folder nor an .npz file")
    if any((source / name).is_file() for name in labels):
        return "csv"
    if any(p.is_dir() and not _hidden(p.name) for p in source.iterdir()):
        return "folders"
    raise SourceError(f"cannot tell the kind of source {source}: expected a labels CSV named "
                      f"{' or '.join(map(repr, labels))} (data.labels), class sub-folders, or an .npz file")


def _hidden(part: str) -> bool:
    return part.startswith(".") or part.lower() in JUNK_DIRS


def _files(root: Path) -> tuple[list[Path], int]:
    """Every file under root, sorted, and the count of hidden ones left out. Symlinked folders are followed (a
    layout assembled with links, as Path.rglob on 3.11 would not), except a link to a folder it sits in (a loop,
    or a folder above the source: its files would be read once already, or are not the source's). Two folders
    that are one (a link to a folder the source holds) stop: their images would be read twice, maybe as two
    classes."""
    found = []
    top = os.path.realpath(root)
    chains = {str(root): {top, *map(str, Path(top).parents)}}  # each folder's own real path and its ancestors'
    seen: dict[str, str] = {}  # real path -> the first folder of the source found there

    def unreadable(e: OSError) -> None:  # a hidden folder (.Trash-1000, .snapshot) is not read anyway
        if not any(_hidden(part) for part in Path(e.filename).relative_to(root).parts):
            raise SourceError(f"cannot list the folder {e.filename} ({e.strerror}): its files would be left out "
                              "unseen; make it readable or move it out of the source")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=True):
        chain = chains.pop(dirpath)
        for d in list(dirnames):
            path = os.path.join(dirpath, d)
            real = os.path.realpath(path)
            rel = Path(path).relative_to(root).as_posix()
            if real in chain:
                dirnames.remove(d)
            elif real in seen and not any(_hidden(part) for part in (seen[real] + "/" + rel).split("/")):
                first, second = sorted((seen[real], rel))
                raise SourceError(f"the folders {first}/ and {second}/ are one folder ({real}, reached through a "
                                  "link): its images would be read twice, under two names. Remove the link, or point "
                                  "data.source at a folder that holds each image once")
            else:
                seen[real] = rel
                chains[path] = chain | {real}
        found += [Path(dirpath, f) for f in filenames]
    files, hidden = [], 0
    for p in sorted(found):
        rel = p.relative_to(root)
        if any(_hidden(part) for part in rel.parts):
            hidden += p.is_file()
            continue
        if p.is_file():
            files.append(p)
    return files, hidden


def _top_dirs(source: Path) -> list[str]:
    return sorted(p.name for p in source.iterdir() if p.is_dir() and not _hidden(p.name))


def _split_dirs(names: Sequence[str]) -> list[str]:
    return [n for n in names if n.lower() in SPLIT_NAMES]


def scan(source: Path, cfg: SourceConfig) -> Scan:
    kind = detect_kind(source, cfg.labels) if cfg.kind == "auto" else cfg.kind
    if kind in ("csv", "folders"):
        s = scan_labelled_tree(source, cfg) if kind == "csv" else scan_class_folders(source)
        lists = split_lists(source, cfg)
        if lists:
            _split_from_lists(s, source, lists, cfg)
        elif any((source / name).is_file() for name in NIH_SPLIT_LISTS.values()):
            s.warnings.append(f"one of NIH's split lists {list(NIH_SPLIT_LISTS.values())} is in the source, not both: "
                              "no split is read from it (name the lists with data.split_lists)")
        return s
    if cfg.split_lists:
        raise SourceError("data.split_lists names list files of images; an npz source carries its split in its arrays")
    if not (source.is_file() and source.suffix.lower() == ".npz"):
        raise SourceError(f"data.kind is npz but {source} is not an .npz file")
    return Scan("npz", published_split="npz arrays", labels_from={"from": "npz <split>_labels arrays"})


# ---------------------------------------------------------------- class folders

def scan_class_folders(source: Path) -> Scan:
    """``<CLASS>/...`` or ``<split>/<CLASS>/...``; anything else stops with what was found."""
    top = _top_dirs(source)
    splits = _split_dirs(top)
    if splits and len(splits) < len(top):
        others = [d for d in top if d not in splits]
        raise SourceError(
            f"{source} holds split folders {splits} beside other folders {others}; expected either class folders "
            f"(<source>/<CLASS>/...) or split folders holding class folders (<source>/train/<CLASS>/...). "
            "Point data.source at the folder that holds train/ and test/ (a download unpacked twice holds a "
            "second copy inside itself), or move the other folders out")
    files, hidden = _files(source)
    s = Scan("folders", skipped_hidden=hidden, labels_from={"from": "class folder names"})
    if splits:
        s.published_split = "split folders " + ", ".join(f"{d}/" for d in splits)
        for d in splits:
            nested = _split_dirs(_top_dirs(source / d))
            if nested:
                raise SourceError(f"split folder {d}/ holds folders named like splits {nested}: expected class "
                                  f"folders ({d}/<CLASS>/...). Point data.source at {d}/{nested[0]}'s parent "
                                  "folder that holds train/ and test/ directly")
    else:
        for d in top:
            nested = _split_dirs(_top_dirs(source / d))
            if nested:
                raise SourceError(
                    f"class folder {d}/ holds folders named like splits {nested}: the split folders sit one level "
                    f"down. Point data.source at {d}/ (expected <source>/train/<CLASS>/...), or, if {d} really is "
                    "a class, rename its sub-folders")
    depth = 3 if splits else 2
    for p in files:
        rel = p.relative_to(source)
        if len(rel.parts) < depth:
            where = f"in the split folder {rel.parts[0]}/" if splits and len(rel.parts) == 2 else "at the source root"
            s.quarantined.append((rel.as_posix(), f"not_in_class_folder: file {where}; images must sit in a folder "
                                                  f"named after their class ({'<split>/' if splits else ''}<CLASS>/)"))
            continue
        # segmentation masks beside the images (COVID-19 Radiography Database: <CLASS>/masks/; COVID-QU-Ex:
        # <split>/<CLASS>/lung masks/, infection masks/) are not radiographs of the class
        below = enumerate(rel.parts[depth - 1:-1], depth - 1)
        mask = next((i for i, part in below if MASK_FOLDER.search(part.lower())), None)
        if mask is not None:
            folder = "/".join(rel.parts[:mask + 1]) + "/"
            s.quarantined.append((rel.as_posix(), f"segmentation_mask: in the folder {folder}, taken for "
                                                  "segmentation masks (a folder named mask or masks below the class "
                                                  "folder), not images"))
        elif splits:
            s.items.append(Item(p, rel.as_posix(), label=rel.parts[1], split=SPLIT_NAMES[rel.parts[0].lower()]))
        else:
            s.items.append(Item(p, rel.as_posix(), label=rel.parts[0]))
    _check_spellings([it.label for it in s.items], "class folders", "rename the folders to one spelling")
    if splits:
        _check_split_classes(splits, s)
    classes = sorted({it.label for it in s.items})
    if len(classes) == 1:
        s.warnings.append(f"one class only ({classes[0]}): a conditional GAN and the downstream classifiers need "
                          "at least two class folders")
    return s


def _check_spellings(names, what: str, fix: str) -> None:
    """Stop when class names differ only in case or surrounding spaces (train/NORMAL beside test/Normal)."""
    spellings: dict[str, set[str]] = defaultdict(set)
    for n in names:
        if n is not None:
            spellings[n.strip().casefold()].add(n)
    clashes = [sorted(v) for v in spellings.values() if len(v) > 1]
    if clashes:
        raise SourceError(f"{what} name one class in several spellings: "
                          f"{'; '.join(' vs '.join(map(repr, c)) for c in sorted(clashes))}; they would be read as "
                          f"different classes. Use one spelling: {fix}")


def _check_split_classes(splits: Sequence[str], s: Scan) -> None:
    """Classes per published split, from the images found (a class folder may be empty: a partial extraction):
    a warning when they differ. Whether a split without a class stops depends on its use (split.assign_splits)."""
    found: dict[str, set[str]] = {SPLIT_NAMES[d.lower()]: set() for d in splits}
    for it in s.items:
        found[it.split].add(it.label)
    if len({frozenset(v) for v in found.values()}) > 1:
        s.warnings.append("the split folders hold images of different classes: " + "; ".join(
            f"{k}: {sorted(v)}" for k, v in found.items()))


# ---------------------------------------------------------------- labels CSV

@dataclass
class Row:
    label: str  # the raw value
    patient: str = ""
    split: str = ""
    origin: str = ""  # "file.csv:line"


class LabelTable:
    """One or more labels CSVs: rows by key, with the label, patient and split columns resolved."""

    def __init__(self, paths: Sequence[Path], cfg: SourceConfig):
        self.paths = list(paths)
        self.cfg = cfg
        self.rows: dict[str, list[Row]] = defaultdict(list)
        self.n_rows = 0
        self.columns: dict[str, str] = {}  # role -> column name as written
        for path in self.paths:
            if not path.is_file():
                raise SourceError(f"labels file {path.name} (data.labels) not found in the source")
            try:
                text = read_utf8(path, "labels file")
            except ValueError as e:
                raise SourceError(str(e)) from None
            reader = csv.DictReader(io.StringIO(text, newline=""))
            header = [h for h in (reader.fieldnames or []) if h is not None]
            cols = self._columns(path, header)
            if self.columns and cols != self.columns:
                raise SourceError(f"{path.name} has columns {cols} but {self.paths[0].name} has {self.columns}; "
                                  "expected the same key, label, patient and split columns in every labels CSV")
            self.columns = cols
            for line, r in enumerate(reader, start=2):
                if any((v or "").strip() for v in r.get(None) or ()) and (r.get(cols["key"]) or "").strip():
                    # more fields than the header: an unquoted comma in a cell, most often (a trailing empty
                    # field, "x.png,A,", is not one)
                    raise SourceError(
                        f"{path.name} line {reader.line_num} has {len(header) + len(r[None])} fields, its header "
                        f"{len(header)}: {[r.get(h) for h in header] + r[None]}. A value holding a comma must "
                        "be quoted (\"Effusion,Pneumonia\"); fix the file, it is not read by guessing")
                k = (r.get(cols["key"]) or "").strip()
                if not k:
                    continue
                self.n_rows += 1
                self.rows[k].append(Row(label=(r.get(cols["label"]) or "").strip(),
                                        patient=(r.get(cols.get("patient", "")) or "").strip(),
                                        split=(r.get(cols.get("split", "")) or "").strip(),
                                        origin=f"{path.name}:{line}"))

    def _columns(self, path: Path, header: list[str]) -> dict[str, str]:
        by_norm = {}
        for h in header:
            by_norm.setdefault(_norm_col(h), h)

        def find(role: str, wanted: str | None, auto: Sequence[str], required: bool) -> str | None:
            if wanted:
                if wanted in header:
                    return wanted
                if _norm_col(wanted) in by_norm:
                    return by_norm[_norm_col(wanted)]
                raise SourceError(f"data.{role} is {wanted!r}, which is not a column of {path.name}; its columns are "
                                  f"{header}")
            hit = next((by_norm[a] for a in auto if a in by_norm), None)
            if hit is None and required:
                raise SourceError(
                    f"labels file {path.name} has columns {header}; expected a {role.split('_')[-1]} column: set "
                    f"data.{role} (auto-detected names: {', '.join(auto)})")
            return hit

        cols = {"key": find("labels_key", self.cfg.labels_key, PATH_KEYS + UID_KEYS + PATIENT_KEYS, True),
                "label": find("labels_column", self.cfg.labels_column, LABEL_KEYS, True)}
        if self.cfg.patient_column:
            cols["patient"] = find("patient_column", self.cfg.patient_column, (), True)
        split = find("split_column", self.cfg.split_column, SPLIT_KEYS, False)
        if split:
            cols["split"] = split
        if cols["key"] == cols["label"]:
            raise SourceError(f"{path.name}: the key column and the label column are both {cols['key']!r}; set "
                              "data.labels_key and data.labels_column")
        return cols

    # -- labels
    def map_value(self, value: str) -> str | None:
        """A raw label value -> class name; None when data.label_map does not cover it."""
        lmap = self.cfg.label_map
        if not lmap:
            return value or None
        for k, cls in lmap:
            if value == k:
                return cls
        num = _as_float(value)
        if num is not None:
            for k, cls in lmap:
                if _as_float(k) == num:
                    return cls
        if "|" in value:  # a multi-label value (NIH): the first class, in the map's order, whose key it holds
            parts = {p.strip() for p in value.split("|")}
            for k, cls in lmap:
                if k in parts:
                    return cls
        return None

    def resolve(self, rows: list[Row], what: str) -> tuple[str | None, str | None]:
        """(class, None) for agreeing rows; (None, reason) when they cannot give a class."""
        mapped = [(r, self.map_value(r.label)) for r in rows]
        if self.cfg.label_map and all(c is None for _, c in mapped):
            vals = sorted({r.label for r in rows})
            return None, (f"unmapped_label: {self.columns['label']} {', '.join(map(repr, vals))} is not covered by "
                          f"data.label_map (keys {[k for k, _ in self.cfg.label_map]})")
        if not self.cfg.label_map and all(c is None for _, c in mapped):
            return None, f"no_label: the {self.columns['label']} value is blank ({rows[0].origin})"
        classes = {c for _, c in mapped if c is not None}
        unmapped = [r for r, c in mapped if c is None]
        if len(classes) > 1 or unmapped:
            vals = ", ".join(f"{r.label!r} ({r.origin})" for r in rows[:6])
            return None, f"conflicting_labels: {len(rows)} rows for {what} disagree: {vals}"
        return classes.pop(), None

    def split_of(self, rows: list[Row], what: str) -> tuple[str | None, str | None]:
        """(split, None) for rows that name one published split; (None, reason) when they name several. A value
        that names no split stops the source (SourceError)."""
        for r in rows:
            if r.split.lower() not in SPLIT_NAMES:
                raise SourceError(f"column {self.columns['split']!r} holds {r.split!r} ({r.origin}); expected "
                                  f"train, val or test (any case; also {', '.join(sorted(SPLIT_NAMES))})")
        splits = {SPLIT_NAMES[r.split.lower()] for r in rows}
        if len(splits) > 1:
            return None, f"conflicting_splits: rows for {what} give splits {sorted({r.split for r in rows})}"
        return splits.pop(), None

    def label_values(self) -> Counter:
        return Counter(r.label for rows in self.rows.values() for r in rows)

    def check_map(self) -> None:
        """Stop when data.label_map matches no value of the label column, or, without a map, when its values
        name one class in several spellings (Normal, normal)."""
        if not self.cfg.label_map:
            _check_spellings(list(self.label_values()), f"the values of column {self.columns['label']!r}",
                             "set data.label_map to map every spelling to one class name")
            return
        values = self.label_values()
        if not any(self.map_value(v) is not None for v in values):
            shown = ", ".join(f"{v!r} ({n})" for v, n in values.most_common(12))
            raise SourceError(f"data.label_map (keys {[k for k, _ in self.cfg.label_map]}) matches none of the "
                              f"{len(values)} values of column {self.columns['label']!r}; found: {shown}")

    def describe(self) -> dict:
        return {"from": "labels CSV", "files": [p.name for p in self.paths], "rows": self.n_rows,
                "key_column": self.columns["key"], "label_column": self.columns["label"],
                **({"patient_column": self.columns["patient"]} if "patient" in self.columns else {}),
                **({"split_column": self.columns["split"]} if "split" in self.columns else {}),
                **({"label_map": dict(self.cfg.label_map)} if self.cfg.label_map else {})}

    # -- keys only the DICOM header resolves
    def lookup_meta(self, mode: str, meta: dict) -> list[Row]:
        return self.rows.get(str(meta.get(mode, "") or ""), [])


def _as_float(v: str) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _norm_path(p: str) -> str:
    p = p.strip().replace("\\", "/")
    while p.startswith("./"):
        p = p[2:]
    return p


def match_mode(keys: Sequence[str], rels: Sequence[str]) -> tuple[str | None, dict[str, str], dict[str, int]]:
    """How the key values name files: path (relative to the source), suffix (a longer path ending with the
    relative path), name (the bare file name) or stem. Returns the mode matching most files (None when none
    matches), its rel -> key mapping, and the match count of every mode."""
    norm = {_norm_path(k): k for k in keys}
    by_suffix: dict[str, str] = {}
    for nk, k in norm.items():
        parts = nk.split("/")
        for i in range(len(parts)):
            # a path ending that several keys share names none of them (siteA/p1/x.dcm, siteB/p1/x.dcm): "" marks
            # it, and _label_by_path quarantines its file instead of taking the first row
            tail = "/".join(parts[i:])
            by_suffix[tail] = k if by_suffix.get(tail, k) == k else ""
    maps: dict[str, dict[str, str]] = {m: {} for m in PATH_MODES}
    for rel in rels:
        pp = PurePosixPath(rel)
        if rel in norm:
            maps["path"][rel] = norm[rel]
        if rel in by_suffix:
            maps["suffix"][rel] = by_suffix[rel]
        if pp.name in norm:
            maps["name"][rel] = norm[pp.name]
        if pp.stem in norm:
            maps["stem"][rel] = norm[pp.stem]
    counts = {m: len(v) for m, v in maps.items()}
    best = max(PATH_MODES, key=lambda m: (counts[m], -PATH_MODES.index(m)))
    if counts[best] == 0:
        return None, {}, counts
    return best, maps[best], counts


def scan_labelled_tree(source: Path, cfg: SourceConfig) -> Scan:
    """A tree of image files (DICOM, PNG, JPEG, TIFF) labelled by one or more CSVs in the source."""
    csv_paths = [source / name for name in cfg.labels]
    _inside_source(cfg.labels, "labels file(s)", "data.labels")
    table = LabelTable(csv_paths, cfg)
    table.check_map()
    files, hidden = _files(source)
    skip = {p.resolve() for p in csv_paths}
    items = [Item(p, p.relative_to(source).as_posix()) for p in files if p.resolve() not in skip]
    s = Scan("csv", skipped_hidden=hidden, labels_from=table.describe())
    if not table.rows:
        raise SourceError(f"labels file(s) {[p.name for p in csv_paths]} have no row with a value in column "
                          f"{table.columns['key']!r}")
    mode, rel_to_key, counts = match_mode(list(table.rows), [it.rel for it in items])
    if mode is None:
        key_norm = _norm_col(table.columns["key"])
        mode = ("sop_instance_uid" if key_norm in UID_KEYS else "patient_id" if key_norm in PATIENT_KEYS else None)
        if mode is None:
            raise SourceError(
                f"column {table.columns['key']!r} of {', '.join(p.name for p in csv_paths)} names none of the "
                f"{len(items)} files under the source, by relative path, by a path ending with it, by file name or "
                f"by file stem; values look like {list(table.rows)[:3]}, files like {[it.rel for it in items[:3]]}. "
                "Set data.labels_key to the column that names the image, or point data.source at the folder the "
                "paths are relative to")
    s.labels_from["key_matches"] = mode
    if mode in HEADER_MODES:  # labels resolved per file after decoding the header
        s.table = table
        s.items = items
        s.labels_from["key_matches"] = f"DICOM {mode} (read from each file's header)"
    else:
        _label_by_path(s, items, table, mode, rel_to_key)
    if "split" in table.columns:
        s.published_split = f"column {table.columns['split']!r}"
        if cfg.split_from != "patients" and s.table is None:   # header keys: compared after decoding
            s.published_split += split_column_vs_folders([it.rel for it in s.items], [it.split for it in s.items],
                                                         table.columns["split"])
        return s
    splits, outside = _folder_splits(s.items)
    # with header keys, files outside the split folders may be unlabelled extras (a README, another CSV) that
    # decoding quarantines; a labelled one among them stops assign_splits (no split beside ones that have one)
    if splits and outside and s.table is None:
        raise SourceError(f"the labelled images sit in split folders {splits} and elsewhere (e.g. {outside[:3]}); "
                          "expected all under split folders or none")
    if splits:
        s.published_split = "split folders " + ", ".join(f"{d}/" for d in splits)
    return s


def _inside_source(names: Sequence[str], what: str, param: str) -> None:
    """DVC tracks data.source: a file outside it could change without prepare running again."""
    elsewhere = [name for name in names if os.path.isabs(name) or ".." in Path(os.path.normpath(name)).parts]
    if elsewhere:
        raise SourceError(f"{what} {elsewhere} ({param}) lie outside data.source, where DVC does not see them "
                          "change; point data.source at a folder that holds both the images and these files, and "
                          "name them relative to it")


NIH_SPLIT_LISTS = {"train": "train_val_list.txt", "test": "test_list.txt"}   # NIH ChestX-ray14's official split


def split_lists(source: Path, cfg: SourceConfig) -> dict[str, str]:
    """split -> list file: data.split_lists, else NIH ChestX-ray14's two files when both sit in the source."""
    if cfg.split_lists:
        lists = dict(cfg.split_lists)
        _inside_source(list(lists.values()), "split list(s)", "data.split_lists")
        missing = [name for name in lists.values() if not (source / name).is_file()]
        if missing:
            raise SourceError(f"split list(s) {missing} (data.split_lists) not found in the source {source}")
        return lists
    return dict(NIH_SPLIT_LISTS) if all((source / n).is_file() for n in NIH_SPLIT_LISTS.values()) else {}


def _split_from_lists(s: Scan, source: Path, lists: dict[str, str], cfg: SourceConfig) -> None:
    """The published split from list files, one image per line by its path relative to the source or its file
    name (NIH's test_list.txt, train_val_list.txt). An image in two lists, or a file name two images share,
    stops; an image in none is quarantined; a split the folders or a CSV column also give must agree."""
    names = {_norm_path(name) for name in lists.values()}
    s.items = [it for it in s.items if it.rel not in names]   # the lists are not images
    s.quarantined = [q for q in s.quarantined if q[0] not in names]
    described = "split lists " + ", ".join(f"{name} ({split})" for split, name in lists.items())
    if cfg.split_from == "patients":   # ignored, and said so
        s.published_split = s.published_split or described
        return
    if s.table is not None and "split" in s.table.columns:
        raise SourceError(f"the split is published twice: by {described} and by the labels CSV's column "
                          f"{s.table.columns['split']!r}, which is read from the DICOM headers after decoding; "
                          "keep one (data.split_lists, data.split_column) or set data.split_from: patients")
    # every file found, quarantined ones too: a listed image the labels CSV left out is no missing download
    labelled = {it.rel for it in s.items}
    files = {rel for rel, _ in s.quarantined} | labelled
    by_name = defaultdict(list)
    for rel in files:
        by_name[PurePosixPath(rel).name].append(rel)
    listed: dict[str, tuple[str, str]] = {}   # rel -> (split, "list:line")
    unmatched: dict[str, list[str]] = defaultdict(list)
    for split, name in lists.items():
        try:
            text = read_utf8(source / name, "split list")
        except ValueError as e:
            raise SourceError(str(e)) from None
        for n, line in enumerate(text.splitlines(), 1):
            entry = _norm_path(line)
            if not entry:
                continue
            found = [entry] if entry in files else sorted(by_name.get(entry, []))
            if len(found) > 1:   # one image beside quarantined namesakes (a mask of the same name) is that image
                found = [rel for rel in found if rel in labelled] or found
            if len(found) > 1:
                raise SourceError(f"{name}:{n} names {entry!r}, the file name of {len(found)} files "
                                  f"({found[:2]}); list paths relative to the source instead")
            if not found:
                unmatched[name].append(entry)
                continue
            rel = found[0]
            if rel not in labelled:   # quarantined already, for its own reason
                continue
            if rel in listed and listed[rel][0] != split:
                raise SourceError(f"{rel} is in two split lists ({listed[rel][1]}, {name}:{n}); an image belongs "
                                  "to one split")
            listed[rel] = (split, f"{name}:{n}")
    differ = [(it.rel, it.split, listed[it.rel][0]) for it in s.items if it.split and it.rel in listed
              and it.split != listed[it.rel][0]]
    if differ:
        counts = Counter((old, new) for _, old, new in differ)
        what = "; ".join(f"{n} {old} by the {s.published_split.split(' (')[0]} and {new} by the lists"
                         for (old, new), n in sorted(counts.items()))
        raise SourceError(f"{described} and {s.published_split} disagree for {len(differ)} images ({what}; e.g. "
                          f"{differ[0][0]!r}). Which split is the published one is yours to say: fix one, or set "
                          "data.split_from: patients to split anew by patient")
    if s.items and not listed:
        examples = [entries[0] for entries in unmatched.values()][:2]
        raise SourceError(f"{described} name none of the {len(s.items)} labelled images (lines like {examples}, "
                          f"files like {[it.rel for it in s.items[:2]]}); a line holds a path relative to the source "
                          "or a file name")
    s.published_split = f"{s.published_split} (agrees with {described})" if s.published_split else described
    kept = []
    for it in s.items:
        if it.rel in listed:
            it.split = listed[it.rel][0]
            kept.append(it)
        else:
            s.quarantined.append((it.rel, f"not_in_split_lists: in none of {sorted(names)}"))
    s.items = kept
    for name, entries in unmatched.items():   # a partial download: NIH ships its images in 12 archives
        s.warnings.append(f"{len(entries)} names in {name} match no image under the source (e.g. {entries[0]!r})")


def split_column_vs_folders(rels: Sequence[str], column_splits: Sequence[str | None], column: str) -> str:
    """A split column beside split folders: the two must agree image for image, or the source stops (which of
    two published splits is the published one is the user's call, not ours). Returns what the summary adds to
    the column's name ('' when no image sits in a split folder). Images outside the folders are not compared.
    Called at scan time when the CSV names files by path, after decoding when it is keyed by a header field."""
    folder = [Item(Path(rel), rel) for rel in rels]
    splits, _ = _folder_splits(folder)
    if not splits:
        return ""
    differ = [(rel, col, f.split) for rel, col, f in zip(rels, column_splits, folder) if f.split and f.split != col]
    if differ:
        counts = Counter((fold, col) for _, col, fold in differ)
        found = "; ".join(f"{n} in the {fold} folder marked {col!r}" for (fold, col), n in sorted(counts.items()))
        raise SourceError(
            f"column {column!r} and the split folders {splits} disagree for {len(differ)} of {len(rels)} "
            f"labelled images ({found}; e.g. {differ[0][0]!r}). Which split is the published one is yours to "
            "say: fix the column or the folders, or set data.split_from: patients to split anew by patient")
    return " (agrees with split folders " + ", ".join(f"{d}/" for d in splits) + ")"


def _label_by_path(s: Scan, items: list[Item], table: LabelTable, mode: str, rel_to_key: dict[str, str]) -> None:
    """Labels, patients and splits from the CSV rows that name each file; unlabelled files are quarantined."""
    csv_names = ", ".join(p.name for p in table.paths)
    # several files may share a name/stem (name and stem modes): none of them can be told apart
    if mode in ("name", "stem"):
        owners = Counter(rel_to_key.values())
    for it in items:
        key = rel_to_key.get(it.rel)
        if key is None:
            s.quarantined.append((it.rel, f"no_label: {mode} {_mode_part(it.rel, mode)!r} is not in "
                                          f"{csv_names} (column {table.columns['key']!r})"))
            continue
        if mode in ("name", "stem") and owners[key] > 1:
            s.quarantined.append((it.rel, f"ambiguous_key: {owners[key]} files have the {mode} {key!r} that "
                                          f"{table.columns['key']!r} names; use a column holding relative paths"))
            continue
        if key == "":   # suffix mode, see match_mode
            ends = [k for k in table.rows if ("/" + _norm_path(k)).endswith("/" + it.rel)]
            s.quarantined.append((it.rel, f"ambiguous_key: {len(ends)} values of {table.columns['key']!r} end with "
                                          f"this path ({ends[:2]}); point data.source at the folder they are "
                                          "relative to"))
            continue
        rows = table.rows[key]
        label, reason = table.resolve(rows, repr(key))
        if reason:
            s.quarantined.append((it.rel, reason))
            continue
        it.label = label
        it.patient = next((r.patient for r in rows if r.patient), None) if "patient" in table.columns else None
        if "split" in table.columns:
            it.split, reason = table.split_of(rows, repr(key))
            if reason:
                s.quarantined.append((it.rel, reason))
                continue
        s.items.append(it)
    matched = set(rel_to_key.values())
    unmatched = [k for k in table.rows if k not in matched]
    s.labels_from["keys_without_file"] = len(unmatched)
    if unmatched:
        s.warnings.append(f"{len(unmatched)} of the {len(table.rows)} keys in the labels CSV name no file under the "
                          f"source (e.g. {unmatched[0]!r})")


def _folder_splits(items: Sequence[Item]) -> tuple[list[str], list[str]]:
    """When items sit in split folders (train/, test/, ...): those folders, each item in one given its split,
    and the items outside them (left without one). ([], []) when no item sits in a split folder. Folders that
    hold every item are looked through (a source one level above CheXpert-v1.0-small/train/, valid/, whose
    CSV paths start with that folder): the split folders are the first level where the items part."""
    parts = [PurePosixPath(it.rel).parts for it in items]
    depth = 0
    while parts and all(len(p) > depth + 2 for p in parts) and len({p[depth] for p in parts}) == 1 \
            and not _split_dirs([parts[0][depth]]):
        depth += 1
    prefix = "".join(f"{d}/" for d in parts[0][:depth]) if parts else ""
    splits = _split_dirs(sorted({p[depth] for p in parts if len(p) > depth + 1}))
    outside = []
    for it, p in zip(items, parts) if splits else ():
        if p[depth] in splits and len(p) > depth + 1:
            it.split = SPLIT_NAMES[p[depth].lower()]
        else:
            outside.append(it.rel)
    return [prefix + d for d in splits], outside


def _mode_part(rel: str, mode: str) -> str:
    pp = PurePosixPath(rel)
    return {"name": pp.name, "stem": pp.stem}.get(mode, rel)


# ---------------------------------------------------------------- patients

def patient_from_path(rel: str, regex: re.Pattern | None) -> str | None:
    """Patient id from the path relative to the source (a patient folder or a file-name prefix), then from the
    file name alone (for a regex anchored with ^): the first group, or the whole match; None without a match."""
    if regex is None:
        return None
    m = regex.search(rel) or regex.search(PurePosixPath(rel).name)
    if not m:
        return None
    return m.group(1) if m.groups() else m.group(0)


def patient_from_name(name: str, regex: re.Pattern | None) -> str | None:
    """Kept for callers of the old name: the regex on a file name or path."""
    return patient_from_path(name, regex)


# ---------------------------------------------------------------- npz

def npz_arrays(path: Path) -> Iterator[tuple[str, str | None, object, np.ndarray]]:
    """MedMNIST-style ``{split}_images`` / ``{split}_labels`` pairs -> (rel, split, label, image)."""
    for pre, images, labels in _npz_pairs(path):
        split = SPLIT_NAMES.get(pre.lower())
        for i in range(len(images)):
            yield f"{path.name}:{pre}_images[{i}]", split, labels[i, 0].item(), images[i]


def npz_labels(path: Path) -> list[tuple[str | None, str]]:
    """(split, label) of every image of an npz, without loading the images (for inspect)."""
    out = []
    for pre, _, labels in _npz_pairs(path, images=False):
        out += [(SPLIT_NAMES.get(pre.lower()), str(v.item())) for v in labels[:, 0]]
    return out


def _npz_pairs(path: Path, images: bool = True):
    with np.load(path) as z:
        keys = set(z.files)
        prefixes = sorted({k[: -len("_images")] for k in keys if k.endswith("_images")})
        if not prefixes:
            raise SourceError(f"{path} holds {sorted(keys)}; expected MedMNIST-style <split>_images and "
                              "<split>_labels arrays")
        for pre in prefixes:
            labels = z[f"{pre}_labels"] if f"{pre}_labels" in keys else None
            imgs = z[f"{pre}_images"] if images else None
            n = len(imgs) if images else _npy_len(z, f"{pre}_images")
            if labels is None or len(labels) != n:
                raise SourceError(f"{path}: {pre}_images has no matching {pre}_labels of the same length")
            labels = np.asarray(labels).reshape(n, -1)
            if labels.shape[1] != 1:
                raise SourceError(f"{path}: {pre}_labels has shape {labels.shape}; expected one label per image")
            yield pre, imgs, labels


def _npy_len(z, key: str) -> int:
    """Length of an array in an open npz from its header only."""
    with z.zip.open(key + ".npy") as f:
        major, _ = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        return int(read(f)[0][0])
