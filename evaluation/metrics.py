"""Binary classification metrics on fixed predictions, with bootstrap confidence intervals over patients.

The positive class is label 1. ``scores`` are probabilities (or any monotone score) for class 1; a
decision ``threshold`` turns them into predictions. Confidence intervals resample *patients* with
replacement (all images of a drawn patient come along), the unit the test split was drawn by.
"""
from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

ACCURACY, BALANCED_ACCURACY, ROC_AUC, PR_AUC, F1 = "accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "f1"
SENSITIVITY, SPECIFICITY = "sensitivity", "specificity"
METRICS = (ACCURACY, BALANCED_ACCURACY, ROC_AUC, PR_AUC, F1, SENSITIVITY, SPECIFICITY)


def _check(y, scores):
    y, s = np.asarray(y), np.asarray(scores, dtype=float)
    if y.ndim != 1 or y.shape != s.shape or not np.isin(y, (0, 1)).all():
        raise ValueError(f"expected 1-D 0/1 labels and scores of one length, got {y.shape} {s.shape}")
    return y.astype(int), s


def classification_metrics(y, scores, threshold: float = 0.5) -> dict[str, float | None]:
    """The seven metrics; the ranking ones (ROC AUC, PR AUC) are None when only one class is present."""
    y, s = _check(y, scores)
    pred = (s >= threshold).astype(int)
    tp, tn = int(((pred == 1) & (y == 1)).sum()), int(((pred == 0) & (y == 0)).sum())
    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    sens = tp / pos if pos else None
    spec = tn / neg if neg else None
    both = pos > 0 and neg > 0
    return {ACCURACY: float((pred == y).mean()),
            BALANCED_ACCURACY: (sens + spec) / 2 if both else None,
            ROC_AUC: float(skm.roc_auc_score(y, s)) if both else None,
            PR_AUC: float(skm.average_precision_score(y, s)) if pos else None,
            F1: float(skm.f1_score(y, pred, zero_division=0.0)),
            SENSITIVITY: sens, SPECIFICITY: spec}


def youden_threshold(y, scores) -> float:
    """The threshold maximising sensitivity + specificity - 1 (Youden's J), for picking on validation."""
    y, s = _check(y, scores)
    fpr, tpr, thr = skm.roc_curve(y, s)
    return float(min(thr[int(np.argmax(tpr - fpr))], 1.0))


def bootstrap_ci(y, scores, patients, threshold: float = 0.5, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> dict[str, list[float | None]]:
    """Percentile bootstrap CI of every metric, resampling patients with replacement."""
    y, s = _check(y, scores)
    patients = np.asarray(patients)
    ids, inverse = np.unique(patients, return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(len(ids))]
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {m: [] for m in METRICS}
    for _ in range(n_boot):
        idx = np.concatenate([members[k] for k in rng.integers(0, len(ids), len(ids))])
        for k, v in classification_metrics(y[idx], s[idx], threshold).items():
            if v is not None:
                draws[k].append(v)
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {k: ([float(np.percentile(v, lo)), float(np.percentile(v, hi))] if v else [None, None])
            for k, v in draws.items()}


def paired_difference(a: list[float], b: list[float], level: float = 0.95) -> dict[str, float | None]:
    """Mean of a - b over paired runs (same seeds) with a t-based CI (None for fewer than two pairs)."""
    from scipy import stats

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(d) == 0:
        return {"mean": None, "ci": [None, None], "n": 0}
    if len(d) < 2:
        return {"mean": float(d.mean()), "ci": [None, None], "n": 1}
    if np.all(d == d[0]):  # no spread: scipy's interval is nan
        return {"mean": float(d[0]), "ci": [float(d[0]), float(d[0])], "n": int(len(d))}
    ci = stats.ttest_1samp(d, 0.0).confidence_interval(level)
    return {"mean": float(d.mean()), "ci": [float(ci.low), float(ci.high)], "n": int(len(d))}


def paired_bootstrap_difference(y, scores_a: list, scores_b: list, thresholds_a: list, thresholds_b: list, patients,
                                names=(ROC_AUC, ACCURACY, BALANCED_ACCURACY), n_boot: int = 1000, seed: int = 0,
                                level: float = 0.95) -> dict[str, dict]:
    """Difference A - B of metrics on one test set, averaged over paired seeds (scores_a[i] with scores_b[i]),
    with a percentile CI from resampling test *patients* (the same resample for every seed and both arms).
    The CI therefore carries test-set sampling uncertainty, which a t interval over a few seeds leaves out."""
    y = np.asarray(y).astype(int)
    if not (len(scores_a) == len(scores_b) == len(thresholds_a) == len(thresholds_b)) or not scores_a:
        raise ValueError("need one score array and threshold per seed on both sides")
    patients = np.asarray(patients)
    ids, inverse = np.unique(patients, return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(len(ids))]

    def diff(idx):
        out = {n: [] for n in names}
        for sa, sb, ta, tb in zip(scores_a, scores_b, thresholds_a, thresholds_b):
            ma = classification_metrics(y[idx], np.asarray(sa)[idx], ta)
            mb = classification_metrics(y[idx], np.asarray(sb)[idx], tb)
            for n in names:
                if ma[n] is not None and mb[n] is not None:
                    out[n].append(ma[n] - mb[n])
        return {n: float(np.mean(v)) if v else None for n, v in out.items()}

    point = diff(np.arange(len(y)))
    rng = np.random.default_rng(seed)
    draws = {n: [] for n in names}
    for _ in range(n_boot):
        d = diff(np.concatenate([members[k] for k in rng.integers(0, len(ids), len(ids))]))
        for n in names:
            if d[n] is not None:
                draws[n].append(d[n])
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {n: {"mean": point[n], "ci": [float(np.percentile(draws[n], lo)), float(np.percentile(draws[n], hi))]
                if draws[n] else [None, None], "seeds": len(scores_a), "bootstrap_samples": n_boot} for n in names}
