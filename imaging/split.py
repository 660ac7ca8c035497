"""Patient-level, label-stratified train/val/test splits in which exact duplicates stay together."""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Mapping, Sequence

import numpy as np

SPLITS = ("train", "val", "test")


def _groups(patients: Sequence[str], hashes: Sequence[str]) -> np.ndarray:
    """Union-find over patients: two patients sharing an identical image become one group."""
    parent: dict[str, str] = {p: p for p in patients}

    def find(p: str) -> str:
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    first_owner: dict[str, str] = {}
    for p, h in zip(patients, hashes):
        q = first_owner.setdefault(h, p)
        rp, rq = find(p), find(q)
        if rp != rq:
            parent[max(rp, rq)] = min(rp, rq)
    return np.array([find(p) for p in patients])


def split_by_patient(patients: Sequence[str], labels: Sequence[int], hashes: Sequence[str],
                     fractions: Mapping[str, float], rng: np.random.Generator) -> np.ndarray:
    """Assign each image a split name.

    Patients (merged into groups where they share an identical image) are never divided. Within each
    stratum (a group's majority label), groups are taken largest first, ties in random order, and each
    goes to the split furthest below its target image count, so every split gets about its fraction of
    every class.
    """
    names = [s for s in SPLITS if fractions.get(s, 0) > 0]
    total = sum(float(fractions[s]) for s in names)
    if not names or abs(total - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be positive and sum to 1, got {dict(fractions)}")
    frac = np.array([float(fractions[s]) for s in names])
    groups = _groups(list(patients), list(hashes))
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    strata: dict[int, list[str]] = defaultdict(list)
    for g in sorted(members):
        counts = Counter(int(labels[i]) for i in members[g])
        strata[max(counts, key=lambda lab: (counts[lab], lab))].append(g)
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
    return out.astype(str)
