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


# ---------------------------------------------------------------- published splits, train_fraction

from imaging.split import assign_splits, keep_patients  # noqa: E402


def published_cohort():
    patients, labels, hashes = cohort(200, seed=4)
    rng = np.random.default_rng(9)
    by_patient = {p: rng.choice(["train", "test"], p=[0.8, 0.2]) for p in sorted(set(patients))}
    return patients, labels, hashes, [by_patient[p] for p in patients]


def test_published_test_is_kept_and_val_carved_from_train_by_patient():
    patients, labels, hashes, pub = published_cohort()
    splits, info = assign_splits(patients, labels, hashes, pub, FRACTIONS, np.random.default_rng(0), min_val_images=10)
    pub = np.array(pub)
    assert (splits[pub == "test"] == "test").all() and (splits[pub == "train"] != "test").all()
    assert info["origin"] == {"train": "published", "val": info["origin"]["val"], "test": "published"}
    assert info["origin"]["val"].startswith("carved")
    n_pool = (pub == "train").sum()
    assert abs((splits == "val").sum() / n_pool - 0.15 / 0.85) < 0.03  # train:val as in the fractions
    seen = {}
    for p, s in zip(patients, splits):
        assert seen.setdefault(p, s) == s
    assert info["patients_in_several_published_splits"] == 0


def test_small_published_val_joins_train_and_a_large_one_is_kept():
    patients, labels, hashes, pub = published_cohort()
    val = {next(p for p, y in zip(patients, labels) if y == c) for c in (0, 1)}   # a patient of each class
    pub = ["val" if p in val else s for p, s in zip(patients, pub)]
    n_val = sum(s == "val" for s in pub)
    splits, info = assign_splits(patients, labels, hashes, pub, FRACTIONS, np.random.default_rng(0),
                                 min_val_images=n_val + 1)
    assert "fewer than data.min_val_images" in info["origin"]["val"] and (splits == "val").sum() > n_val
    splits, info = assign_splits(patients, labels, hashes, pub, FRACTIONS, np.random.default_rng(0),
                                 min_val_images=n_val)
    assert info["origin"]["val"] == "published" and [s for s in splits] == [str(s) for s in pub]


def test_published_split_modes():
    patients, labels, hashes, pub = published_cohort()
    none = [None] * len(patients)
    with pytest.raises(ValueError, match="publishes no split"):
        assign_splits(patients, labels, hashes, none, FRACTIONS, np.random.default_rng(0), split_from="published")
    a, info = assign_splits(patients, labels, hashes, pub, FRACTIONS, np.random.default_rng(0), split_from="patients")
    b = split_by_patient(patients, labels, hashes, FRACTIONS, np.random.default_rng(0))
    assert (a == b).all() and info["split_from"] == "patients" and "ignored" in info["warnings"][0]
    c, _ = assign_splits(patients, labels, hashes, none, FRACTIONS, np.random.default_rng(0))
    assert (c == b).all()  # auto without a published split: as before
    # a patient in two published splits is counted, and the published split kept
    pub2 = list(pub)
    i, j = patients.index("P3"), len(patients) - 1 - patients[::-1].index("P3")
    if i == j:
        pytest.skip("P3 has one image")
    pub2[i], pub2[j] = "train", "test"
    s, info = assign_splits(patients, labels, hashes, pub2, FRACTIONS, np.random.default_rng(0), min_val_images=1)
    assert info["patients_in_several_published_splits"] == 1 and s[j] == "test"


@pytest.mark.parametrize("n_patients", [3, 4, 6])
def test_a_small_cohort_still_fills_every_split(n_patients):
    patients = [f"P{p}" for p in range(n_patients) for _ in range(2)]
    labels = np.array([p % 2 for p in range(n_patients) for _ in range(2)])
    hashes = [f"h{i}" for i in range(len(patients))]
    splits = split_by_patient(patients, labels, hashes, FRACTIONS, np.random.default_rng(0))
    assert set(splits) == set(FRACTIONS)
    assert all(len({s for p2, s in zip(patients, splits) if p2 == p}) == 1 for p in patients)


def test_one_patient_id_for_every_image_stops_and_says_how_to_set_the_patient():
    n = 12
    patients, labels, hashes = ["ANONYMOUS"] * n, np.arange(n) % 2, [f"h{i}" for i in range(n)]
    message = r"1 distinct patient id.*most frequent 'ANONYMOUS' on 12 images.*data.patient_column.*data.patient_regex"
    with pytest.raises(ValueError, match=message):
        assign_splits(patients, labels, hashes, [None] * n, FRACTIONS, np.random.default_rng(0))
    # a published test split is kept, but val cannot be carved from one training patient either
    pub = ["test"] * 4 + ["train"] * (n - 4)
    with pytest.raises(ValueError, match=r"into train, val needs at least 2 patients; found 1 distinct"):
        assign_splits(patients, labels, hashes, pub, FRACTIONS, np.random.default_rng(0))


def test_keep_patients_is_stratified_and_whole_patient():
    patients, labels, hashes = cohort(300, seed=5)
    keep = keep_patients(patients, labels, hashes, 0.25, np.random.default_rng(1))
    kept = {p for p, k in zip(patients, keep) if k}
    for p, k in zip(patients, keep):
        assert (p in kept) == k  # whole patients only
    n_pat = {lab: len({p for p, lb in zip(patients, labels) if lb == lab}) for lab in (0, 1)}
    for lab in (0, 1):
        got = len({p for p, lb, k in zip(patients, labels, keep) if lb == lab and k})
        assert abs(got - 0.25 * n_pat[lab]) <= 1
    assert keep_patients(patients, labels, hashes, 1.0, np.random.default_rng(1)).all()
    again = keep_patients(patients, labels, hashes, 0.25, np.random.default_rng(1))
    assert (again == keep).all()
    with pytest.raises(ValueError, match="train_fraction"):
        keep_patients(patients, labels, hashes, 0.0, np.random.default_rng(1))


def test_patients_sharing_an_image_are_grouped_transitively_and_named_by_the_smallest_id():
    from imaging.split import _groups

    # p3 and p1 share image h1, p1 and p2 share h2 (so p3, p1 and p2 are one group, named p1); p9 shares nothing
    patients = ["p3", "p1", "p1", "p2", "p9", "p2"]
    hashes = ["h1", "h1", "h2", "h2", "h3", "h4"]
    assert _groups(patients, hashes).tolist() == ["p1", "p1", "p1", "p1", "p9", "p1"]
    assert _groups(["b", "a"], ["x", "y"]).tolist() == ["b", "a"]


def test_a_split_left_without_a_class_is_warned_about_by_name():
    # 3 patients of class 0 and 20 of class 1: one split gets no class-0 patient, and the warning names it
    patients = [f"P{p}" for p in range(23)]
    labels = np.array([0] * 3 + [1] * 20)
    hashes = [f"h{p}" for p in range(23)]
    splits, info = assign_splits(patients, labels, hashes, [None] * 23, FRACTIONS, np.random.default_rng(0),
                                 class_names=["NORMAL", "PNEUMONIA"])
    empty = [s for s in ("val", "test") if not ((splits == s) & (labels == 0)).any()]
    assert empty and [w for w in info["warnings"] if "no image of class NORMAL" in w] == [
        f"the {s} split has no image of class NORMAL (too few patients of the class to give every split one when "
        f"splitting by patient): its metrics say nothing about it" for s in empty]
    # a published test split kept as it is without a class (a CSV split column, an empty class folder) stops
    pub = ["test" if p >= 18 else "train" for p in range(23)]
    with pytest.raises(ValueError, match="the published test split has no image of class label 0, which train has"):
        assign_splits(patients, labels, hashes, pub, FRACTIONS, np.random.default_rng(0), min_val_images=1)
