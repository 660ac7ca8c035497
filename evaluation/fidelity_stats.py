"""Fidelity statistics of a synthetic set beyond FID, on features from evaluation/fidelity.py: KID and
precision/recall at equal sizes, relative FID over draws of the real halves, and the memorisation audit.
Only the fidelity stage imports this module (the GAN trainer reads FID alone), so a change here reruns that
stage and no other.
"""
from __future__ import annotations

import numpy as np
import torch

from common.torchvision_guard import ensure_torchvision
from evaluation.fidelity import FID, as_features, fid

ensure_torchvision()
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric  # noqa: E402
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric  # noqa: E402

# result keys
KID, KID_STD, KID_SUBSET, PRECISION, RECALL = "kid", "kid_std", "kid_subset_size", "precision", "recall"
N_SYNTHETIC, N_REAL = "n_synthetic", "n_real"


def fid_few(f_synthetic, f_real) -> float:
    """FID for sets of fewer rows than features, where the covariances are of low rank: with X the centred
    rows, the trace of sqrt(S1 S2) is the sum of the singular values of X1 X2^T / sqrt((n1 - 1)(n2 - 1)), an
    n1 x n2 matrix, where torch-fidelity (``fid``) takes the eigenvalues of the D x D product (2.7 s at D 2048
    on 2 cores; this: milliseconds at 460 rows). The same number up to rounding at any size (tested), but
    faster only while n1 and n2 are below D, where relative FID takes it."""
    x1, x2 = (as_features(f).numpy() for f in (f_synthetic, f_real))
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(f"feature dimensions differ: {x1.shape[1]} and {x2.shape[1]}")
    diff = x1.mean(axis=0) - x2.mean(axis=0)
    c1, c2 = x1 - x1.mean(axis=0), x2 - x2.mean(axis=0)
    n1, n2 = len(x1) - 1, len(x2) - 1
    tr_covmean = np.linalg.svd(c1 @ c2.T, compute_uv=False).sum() / np.sqrt(n1 * n2)
    return float(diff @ diff + (c1 * c1).sum() / n1 + (c2 * c2).sum() / n2 - 2 * tr_covmean)


def _fid_any(a: torch.Tensor, b: torch.Tensor) -> float:
    return fid_few(a, b) if max(len(a), len(b)) < a.shape[1] else fid(a, b)


def precision_recall(a, b, prc_neighborhood: int = 3) -> tuple[float | None, float | None]:
    """Precision and recall (Kynkäänniemi et al. 2019) of ``a`` against ``b``; (None, None) when either side
    has no more than ``prc_neighborhood`` samples."""
    if min(len(a), len(b)) <= prc_neighborhood:
        return None, None
    prc = prc_features_to_metric(a.float(), b.float(), prc_neighborhood=prc_neighborhood, verbose=False,
                                 save_cpu_ram=True)
    return float(prc[KEY_METRIC_PRECISION]), float(prc[KEY_METRIC_RECALL])


def fidelity_metrics(f_synthetic, f_real, kid_subsets: int = 100, prc_neighborhood: int = 3,
                     seed: int = 2020) -> dict:
    """FID, KID and precision/recall between two feature sets, with the sample counts.

    KID's subset size is min(1000, n_synthetic, n_real), so small sets still get a value (where it is the whole
    of one set, ``kid_std`` is the spread over the other set's subsets, not a standard error). Precision and
    recall are taken at equal sizes, the larger set subsampled (seeded) to the smaller: their k-NN radii
    shrink with n, so at unequal sizes even two samples of one distribution score well below 1.
    """
    a, b = as_features(f_synthetic), as_features(f_real)
    subset = min(1000, len(a), len(b))
    kid = kid_features_to_metric(a, b, kid_subsets=kid_subsets, kid_subset_size=subset, rng_seed=seed, verbose=False)
    n = min(len(a), len(b))
    rng = np.random.default_rng(seed)
    pr_a, pr_b = (x[np.sort(rng.choice(len(x), n, replace=False))] if len(x) > n else x for x in (a, b))
    precision, recall = precision_recall(pr_a, pr_b, prc_neighborhood)
    return {FID: fid(a, b), KID: kid[KEY_METRIC_KID_MEAN], KID_STD: kid[KEY_METRIC_KID_STD], KID_SUBSET: subset,
            PRECISION: precision, RECALL: recall, "n_precision_recall": n, N_SYNTHETIC: len(a), N_REAL: len(b)}


def patient_halves(groups, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of two disjoint halves of equal size, no patient (``groups[i]``) in both: patients in random
    order fill half A up to half the rows, the rest go to B, and the larger half is subsampled to the smaller.
    Images of one patient resemble each other: split by image, each half would hold near-copies of the
    other's images."""
    groups = np.asarray(groups)
    patients = rng.permutation(np.unique(groups))
    sizes = np.array([np.sum(groups == p) for p in patients])
    in_a = np.isin(groups, patients[np.cumsum(sizes) - sizes < len(groups) / 2])
    rows_a, rows_b = np.flatnonzero(in_a), np.flatnonzero(~in_a)
    n = min(len(rows_a), len(rows_b))
    return (np.sort(rng.choice(rows_a, n, replace=False)), np.sort(rng.choice(rows_b, n, replace=False)))


def relative_fid(f_synthetic, f_real, rng: np.random.Generator) -> dict:
    """FID(synthetic, real half B) / FID(real half A, real half B), all three sets of one size, so the ratio is
    ~1 for a generator as close to the data as an independent real sample is. Fewer synthetic images than a
    half: the halves are cut to their number. Precision and recall of the synthetic set against B, beside those
    of A against B, give their scale at the same size.

    FID's small-sample bias shrinks like 1/n, so the floor falls as n grows while a generator's distance does
    not: the ratio grows with ``n_half``. Compare relative FIDs at equal ``n_half`` only. The halves are split
    by image: with several images per patient they share patients, which lowers the floor; split by patient,
    each half holds fewer independent samples than a generator's images do, which raises it more (a simulated
    perfect generator of independent images, 3 images per patient: 0.98-1.30 by image, 0.63-0.69 by patient)."""
    a, b = as_features(f_synthetic), as_features(f_real)
    perm = rng.permutation(len(b))
    half = min(len(b) // 2, len(a))
    if half < 2:
        raise ValueError(f"relative FID needs at least 4 real and 2 synthetic images, got {len(b)} and {len(a)}")
    rows_a, rows_b = perm[:len(b) // 2], perm[len(b) // 2:2 * (len(b) // 2)]
    if half < len(rows_a):   # as many real images per half as there are synthetic ones
        rows_a, rows_b = rows_a[:half], rows_b[:half]
    real_a, real_b = b[rows_a], b[rows_b]
    syn = a[np.sort(rng.choice(len(a), half, replace=False))]
    between_real = _fid_any(real_a, real_b)
    to_real = _fid_any(syn, real_b)
    precision, recall = precision_recall(syn, real_b)
    precision_real, recall_real = precision_recall(real_a, real_b)
    return {"relative_fid": to_real / between_real if between_real > 0 else None,
            "fid_synthetic_vs_real_half": to_real, "fid_real_halves": between_real, "n_half": half,
            "n_synthetic_used": len(syn), "precision_vs_half": precision, "recall_vs_half": recall,
            "precision_real_halves": precision_real, "recall_real_halves": recall_real}


DRAWN = ("relative_fid", "fid_synthetic_vs_real_half", "fid_real_halves", "precision_vs_half", "recall_vs_half",
         "precision_real_halves", "recall_real_halves")


def relative_fid_draws(f_synthetic, f_real, rng: np.random.Generator, draws: int) -> tuple[dict, list[dict]]:
    """``relative_fid`` over ``draws`` draws of the real halves and the synthetic subset, draw i taking the i-th
    generator ``rng.spawn`` gives: each figure's median over the draws, relative FID's 2.5th and 97.5th
    percentiles (``relative_fid_range``), and the draws themselves. One draw is not a figure to report: on
    the Kermany study's val split (n_half 460), 95% of 100 draws put the real halves' FID alone in 0.022-0.211
    and one generator's relative FID in 0.73-8.04 (bench/results/relative_fid_spread.json). The range is the
    spread of that choice, not a confidence interval over new data: every draw reads the same images."""
    if draws < 1:
        raise ValueError(f"relative FID needs at least one draw, got {draws}")
    a, b = as_features(f_synthetic), as_features(f_real)
    runs = [relative_fid(a, b, g) for g in rng.spawn(draws)]
    summary = {k: _median([r[k] for r in runs]) for k in DRAWN}
    values = [r["relative_fid"] for r in runs if r["relative_fid"] is not None]
    summary["relative_fid_range"] = ([float(v) for v in np.percentile(np.asarray(values, float), [2.5, 97.5])]
                                     if values else None)
    if len(values) < draws:   # real halves at FID 0 (duplicate images): no ratio in that draw
        summary["note"] = f"relative FID undefined in {draws - len(values)} of {draws} draws (real halves' FID 0)"
    return {**summary, "relative_fid_draws": draws, "n_half": runs[0]["n_half"],
            "n_synthetic_used": runs[0]["n_synthetic_used"]}, runs


def _median(values: list) -> float | None:
    """The median of the defined values (None: none is)."""
    values = [v for v in values if v is not None]
    return float(np.median(np.asarray(values, float))) if values else None


def nearest(query, base, batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance from each query row to its nearest base row, and that row's index."""
    q, b = torch.as_tensor(np.asarray(query), dtype=torch.float32), torch.as_tensor(np.asarray(base), dtype=torch.float32)
    q, b = q.flatten(1), b.flatten(1)
    dists, idx = [], []
    for i in range(0, len(q), batch):
        d = torch.cdist(q[i:i + batch], b)
        m = d.min(dim=1)
        dists.append(m.values)
        idx.append(m.indices)
    return torch.cat(dists).numpy(), torch.cat(idx).numpy()


def _share_ci(k: int, n: int) -> list[float]:
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(0.95)   # exact (Clopper-Pearson)
    return [float(ci.low), float(ci.high)]


def memorisation_audit(synthetic, train, heldout, percentile: float = 1.0,
                       halves: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """For each synthetic image, the distance to its nearest real training image, against the same
    distance for held-out real images (which the generator never saw). Inputs: one representation per
    image (features or pixels), (N, ...) arrays. The held-out images are split in two (``halves``: the rows of
    each, e.g. :func:`patient_halves`; by default a seeded split by image): the ``percentile``-th percentile of
    one half's distances is the threshold, and the share of
    the other half below it is the held-out rate, measured like the synthetic one rather than equal to the
    percentile by construction. Both shares carry exact binomial 95% CIs (the held-out one treats images as
    independent; images of one patient are not quite). Halves of fewer than 2 images (fewer than 4 held-out
    images, or one patient): the threshold comes from all of them and the held-out rate is the percentile by
    construction (``heldout_split`` false)."""
    d_syn, i_syn = nearest(synthetic, train)
    d_real, _ = nearest(heldout, train)
    if halves is None:
        perm = np.random.default_rng(0).permutation(len(d_real))
        halves = perm[:len(d_real) // 2], perm[len(d_real) // 2:]
    rows_t, rows_m = halves
    split = min(len(rows_t), len(rows_m)) >= 2   # not with fewer than 4 images or, by patient, one patient
    d_thr, d_measure = (d_real[rows_t], d_real[rows_m]) if split else (d_real, d_real)
    thr = float(np.percentile(d_thr, percentile))
    below_syn, below_real = int(np.sum(d_syn < thr)), int(np.sum(d_measure < thr))
    return {"threshold": thr, "percentile": percentile, "heldout_split": split,
            "fraction_synthetic_below": below_syn / len(d_syn),
            "fraction_synthetic_below_ci": _share_ci(below_syn, len(d_syn)),
            "fraction_heldout_below": below_real / len(d_measure),
            "fraction_heldout_below_ci": _share_ci(below_real, len(d_measure)),
            "median_synthetic_distance": float(np.median(d_syn)), "median_heldout_distance": float(np.median(d_real)),
            "n_synthetic": len(d_syn), "n_heldout": len(d_real), "n_heldout_threshold": len(d_thr),
            "n_heldout_measured": len(d_measure), "n_train": len(train),
            "distances": d_syn, "nearest_train": i_syn}
