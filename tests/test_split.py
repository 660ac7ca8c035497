from collections import Counter

import numpy as np
import pytest

from imaging.split import split_by_patient

FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def cohort(n_patients=120, seed=0):
    rng = np.random.default_rng(seed)
    patients, labels, hashes = [], [], []
    for p in range(n_patients):
        lab = int(rng.random() < 0.3)
        for i in range(int(rng.integers(1, 5))):
            patients.append(f"P{p}")
            labels.append(lab)
            hashes.append(f"h{p}-{i}")
    return patients, np.array(labels), hashes


def test_no_patient_in_two_splits_and_fractions_hold():
    patients, labels, hashes = cohort()
    splits = split_by_patient(patients, labels, hashes, FRACTIONS, np.random.default_rng(1))
    per_patient = {}
    for p, s in zip(patients, splits):
        assert per_patient.setdefault(p, s) == s
    n = len(patients)
    for s, f in FRACTIONS.items():
        assert abs((splits == s).sum() / n - f) < 0.03


def test_split_is_stratified_by_label():
    patients, labels, hashes = cohort(300)
    splits = split_by_patient(patients, labels, hashes, FRACTIONS, np.random.default_rng(2))
    overall = labels.mean()
    for s in FRACTIONS:
        assert abs(labels[splits == s].mean() - overall) < 0.03


def test_exact_duplicates_never_straddle_splits():
    patients, labels, hashes = cohort()
    # make 20 pairs of different patients share an identical image
    for k in range(20):
        i, j = patients.index(f"P{k}"), patients.index(f"P{k + 50}")
        hashes[j] = hashes[i]
    splits = split_by_patient(patients, labels, hashes, FRACTIONS, np.random.default_rng(3))
    by_hash = {}
    for h, s in zip(hashes, splits):
        assert by_hash.setdefault(h, s) == s
    for k in range(20):  # and the two patients travel together with all their images
        assert len(set(splits[[i for i, p in enumerate(patients) if p in (f"P{k}", f"P{k + 50}")]])) == 1


def test_split_is_reproducible_and_seed_dependent():
    patients, labels, hashes = cohort()
    a = split_by_patient(patients, labels, hashes, FRACTIONS, np.random.default_rng(5))
    b = split_by_patient(patients, labels, hashes, FRACTIONS, np.random.default_rng(5))
    c = split_by_patient(patients, labels, hashes, FRACTIONS, np.random.default_rng(6))
    assert (a == b).all() and (a != c).any()
    assert Counter(a) == Counter(b)


def test_bad_fractions_are_refused():
    with pytest.raises(ValueError, match="sum to 1"):
        split_by_patient(["a"], [0], ["h"], {"train": 0.5, "val": 0.1, "test": 0.1}, np.random.default_rng())
