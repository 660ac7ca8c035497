"""Patient-level, label-stratified train/val/test splits in which exact duplicates stay together."""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Mapping, Sequence

import numpy as np

SPLITS = ("train", "val", "test")


def _groups(patients: Sequence[str], hashes: Sequence[str]) -> np.ndarray:
    """Each image's group: patients sharing an identical image (same hash) are joined, transitively, as the
    connected components of the patient graph (scipy); a group is named by its smallest patient id."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ids, patient = np.unique(np.asarray(patients, dtype=str), return_inverse=True)   # ids sorted
    _, first, image_hash = np.unique(np.asarray(hashes, dtype=str), return_index=True, return_inverse=True)
    owner = patient[first[image_hash]]          # the patient of each hash's first image
    edges = coo_matrix((np.ones(len(patient)), (patient, owner)), shape=(len(ids), len(ids)))
    n_groups, group = connected_components(edges, directed=False)
    smallest = np.full(n_groups, len(ids))
    np.minimum.at(smallest, group, np.arange(len(ids)))
    return ids[smallest[group[patient]]]


def _strata(patients, labels, hashes) -> tuple[list[str], dict[str, list[int]], dict[int, list[str]]]:
    """Groups (patients joined by shared duplicate images), their members, and the groups per label stratum
    (a group's majority label; ties to the higher label)."""
    groups = _groups(list(patients), list(hashes))
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    strata: dict[int, list[str]] = defaultdict(list)
    for g in sorted(members):
        counts = Counter(int(labels[i]) for i in members[g])
        strata[max(counts, key=lambda lab: (counts[lab], lab))].append(g)
    return groups, members, strata


def split_by_patient(patients: Sequence[str], labels: Sequence[int], hashes: Sequence[str],
                     fractions: Mapping[str, float], rng: np.random.Generator) -> np.ndarray:
    """Assign each image a split name.

    Patients (merged into groups where they share an identical image) are never divided. Within each
    stratum (a group's majority label), groups are taken largest first, ties in random order, and each
    goes to the split furthest below its target image count, so every split gets about its fraction of
    every class. A split left without images (small cohorts, where no stratum reaches one group for it) then
    takes the smallest group of the split holding most groups. Fewer groups than splits raise ValueError.
    """
    names = [s for s in SPLITS if fractions.get(s, 0) > 0]
    total = sum(float(fractions[s]) for s in names)
    if not names or abs(total - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be positive and sum to 1, got {dict(fractions)}")
    frac = np.array([float(fractions[s]) for s in names])
    groups, members, strata = _strata(patients, labels, hashes)
    if len(members) < len(names):
        ids = Counter(patients)
        top, n_top = ids.most_common(1)[0]
        raise ValueError(
            f"splitting {len(groups)} images by patient into {', '.join(names)} needs at least {len(names)} "
            f"patients; found {len(ids)} distinct patient id(s) ({len(members)} once patients sharing an identical "
            f"image are joined), the most frequent {top!r} on {n_top} images. A constant PatientID (anonymisers "
            "write e.g. 'ANONYMOUS') makes one patient: set data.patient_column (a labels CSV column) or "
            "data.patient_regex (on the path relative to the source) to the real patient id, and list it first in "
            "data.patient_id_from (e.g. [csv, regex, dicom]; index.csv's patient_id_from column says where ids "
            "came from)")
    out = np.empty(len(groups), dtype=object)
    for label in sorted(strata):
        gs = strata[label]
        order = rng.permutation(len(gs))
        gs = sorted((gs[i] for i in order), key=lambda g: -len(members[g]))  # stable: ties stay random
        target = frac * sum(len(members[g]) for g in gs)
        filled = np.zeros(len(names))
        for g in gs:
            k = int(np.argmax(target - filled))
            filled[k] += len(members[g])
            out[members[g]] = names[k]
    for name in names:
        if not (out == name).any():
            held = {n: sorted({g for g in members if out[members[g][0]] == n}, key=lambda g: (len(members[g]), g))
                    for n in names}
            donor = max(names, key=lambda n: len(held[n]))
            out[members[held[donor][0]]] = name
    return out.astype(str)


def _subset_fractions(fractions: Mapping[str, float], names: Sequence[str]) -> dict[str, float]:
    total = sum(float(fractions.get(s, 0)) for s in names)
    if total <= 0:
        raise ValueError(f"split fractions {dict(fractions)} give nothing to {list(names)}")
    return {s: float(fractions.get(s, 0)) / total for s in names}


def assign_splits(patients: Sequence[str], labels: Sequence[int], hashes: Sequence[str],
                  published: Sequence[str | None], fractions: Mapping[str, float], rng: np.random.Generator, *,
                  split_from: str = "auto", min_val_images: int = 0,
                  class_names: Sequence[str] | None = None) -> tuple[np.ndarray, dict]:
    """Split names for every image, and how each split came about.

    ``published``: each image's split as the source publishes it (None where it has none). With
    ``split_from`` auto (a published split when there is one) or published, a published test split is kept
    as it is, and so is a published validation split of at least ``min_val_images``; a missing or smaller
    one is carved from the published training split by patient (a too small published val joins the
    training pool first), in the proportions of ``fractions``. With ``patients`` everything is split anew.
    Returns (splits, info) where info holds ``split_from``, ``origin`` per split and the warnings. A val or test
    split left without a class that train has (named by ``class_names``, else by label) is warned about when
    carved, and stops (ValueError) when published and kept.
    """
    if split_from not in ("auto", "published", "patients"):
        raise ValueError(f"data.split_from must be auto, published or patients; got {split_from!r}")
    labels = np.asarray(labels)
    pub = np.array([p if p is not None else "" for p in published], dtype=object)
    has_published = bool((pub != "").any())
    info: dict = {"warnings": []}
    if split_from == "published" and not has_published:
        raise ValueError("data.split_from is published but the source publishes no split (no split folders, split "
                         "column or npz split arrays); set data.split_from to auto or patients")
    if not has_published or split_from == "patients":
        if has_published:
            info["warnings"].append("the source's published split is ignored (data.split_from=patients): every "
                                    "image is split anew by patient, so results are not comparable with the "
                                    "published test split")
        info["split_from"] = "patients"
        info["origin"] = {s: "patients" for s in SPLITS}
        out = split_by_patient(patients, labels, hashes, fractions, rng)
        info["warnings"] += _missing_classes(out, labels, info["origin"], class_names)
        return out, info
    if (pub == "").any():
        raise ValueError(f"{int((pub == '').sum())} images have no published split while the others have one (images "
                         "outside the split folders?); expected a published split for all or none")
    counts = Counter(pub)
    if not counts.get("train"):
        raise ValueError(f"the published split has no training images ({dict(counts)}); expected a train split")
    info["split_from"] = "published"
    info["published"] = {s: int(counts.get(s, 0)) for s in SPLITS}
    seen: dict[str, set] = defaultdict(set)
    for p, s in zip(patients, pub):
        seen[p].add(s)
    info["patients_in_several_published_splits"] = sum(len(v) > 1 for v in seen.values())
    if info["patients_in_several_published_splits"]:
        info["warnings"].append(
            f"{info['patients_in_several_published_splits']} patient ids appear in more than one published split "
            "(the published split is kept, as papers on this dataset report it; check how the source numbers "
            "its patients)")
    out = pub.copy()
    origin = {"train": "published", "val": "published", "test": "published"}
    pool = pub == "train"
    carve = []
    if counts.get("val", 0) < max(1, min_val_images):
        if counts.get("val"):
            pool |= pub == "val"
            origin["val"] = (f"carved from the published train split by patient (the published val split has "
                             f"{counts['val']} images, fewer than data.min_val_images={min_val_images}; they "
                             "joined the training pool)")
        else:
            origin["val"] = "carved from the published train split by patient (none published)"
        carve.append("val")
    if not counts.get("test"):
        origin["test"] = "carved from the published train split by patient (none published)"
        carve.append("test")
        info["warnings"].append("the source publishes no test split: test is carved from the training split by "
                                "patient, so results are not comparable with published figures")
    if carve:
        idx = np.flatnonzero(pool)
        sub = split_by_patient([patients[i] for i in idx], labels[idx], [hashes[i] for i in idx],
                               _subset_fractions(fractions, ["train", *carve]), rng)
        out[idx] = sub
        info["warnings"].append("; ".join(f"{s}: {origin[s]}" for s in carve))
    info["origin"] = origin
    info["warnings"] += _missing_classes(out, labels, origin, class_names)
    return out.astype(str), info


def _missing_classes(splits: np.ndarray, labels: np.ndarray, origin: Mapping[str, str],
                     class_names: Sequence[str] | None) -> list[str]:
    """A warning for each carved val/test split without an image of a class train has (too few patients of the
    class to give every split one): its metrics say nothing about that class. A published one kept as it is
    stops (ValueError): an empty class folder or missing rows, most often a partial download or extraction."""
    out = []
    train = set(labels[splits == "train"].tolist())
    for split in ("val", "test"):
        missing = sorted(train - set(labels[splits == split].tolist()))
        if not missing or not (splits == split).any():
            continue
        names = ", ".join(str(class_names[m]) if class_names is not None else f"label {m}" for m in missing)
        if origin.get(split) == "published":
            raise ValueError(f"the published {split} split has no image of class {names}, which train has (a partial "
                             "download or extraction?): complete it, or set data.classes to the classes every split "
                             "has, or data.split_from: patients to split anew by patient")
        out.append(f"the {split} split has no image of class {names} (too few patients of the class to give every "
                   "split one when splitting by patient): its metrics say nothing about it")
    return out


def keep_patients(patients: Sequence[str], labels: Sequence[int], hashes: Sequence[str], fraction: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Boolean mask keeping ``fraction`` of the patients (groups sharing an identical image count as one),
    per label stratum (a group's majority label), at least one group per stratum; for ``data.train_fraction``."""
    if not 0 < fraction <= 1:
        raise ValueError(f"data.train_fraction must be in (0, 1], got {fraction}")
    keep = np.ones(len(patients), dtype=bool)
    if fraction == 1 or not len(patients):
        return keep
    groups, members, strata = _strata(patients, labels, hashes)
    keep[:] = False
    for label in sorted(strata):
        gs = strata[label]
        n = max(1, int(round(fraction * len(gs))))
        for j in rng.permutation(len(gs))[:n]:
            keep[members[gs[j]]] = True
    return keep


def duplicates_across(splits: Sequence[str], hashes: Sequence[str]) -> int:
    """Groups of identical images (same prepared-pixel hash) whose members sit in more than one split."""
    where: dict[str, set] = defaultdict(set)
    for s, h in zip(splits, hashes):
        where[h].add(s)
    return sum(len(v) > 1 for v in where.values())
