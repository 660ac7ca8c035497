"""The downstream arms: their names and the training sets each classifier runs (params ``downstream.arms``).
Shared by the downstream, downstream_summary and report stages, so no stage module imports another (and none
of them pulls in torch or MONAI through a name). The verdict on a paired difference is in pipeline/verdict.py,
which the arm stages do not import: a change to how results are called does not retrain a classifier.

``downstream.arms.<classifier>.real`` lists the training sets that read real images only, and
``...synthetic`` those that also read the synthetic set. dvc.yaml runs the two groups as separate matrix
stages, so a new generator re-runs the synthetic arms and leaves the real-only ones (and their results) alone.
"""
from __future__ import annotations

CLASSIFIERS = ("cnn", "xgboost")
REAL_ONLY = ("real", "real_classic")            # real images (real_classic: with flips, rotations, jitter)
WITH_SYNTHETIC = ("real_synthetic", "synthetic", "real_synthetic_classic")  # read the synthesize stage's images too
TRAINSETS = REAL_ONLY + WITH_SYNTHETIC
GROUPS = {"real": REAL_ONLY, "synthetic": WITH_SYNTHETIC}
CLASSIC = ("real_classic", "real_synthetic_classic")  # trained with classic augmentation (every image it reads)


def arm_name(classifier: str, trainset: str, fraction: float, seed: int) -> str:
    """As dvc.yaml's matrix names it: the fraction printed as YAML prints a float (1.0, 0.25)."""
    return f"{classifier}-{trainset}-{float(fraction)}-{int(seed)}"


def planned(arms: dict) -> dict[str, list[str]]:
    """``downstream.arms`` -> classifier -> its training sets (real-only first), for the classifiers that run
    any. A training set in the wrong group would run without the inputs it reads: that is refused."""
    out: dict[str, list[str]] = {}
    for clf, groups in arms.items():
        if clf not in CLASSIFIERS:
            raise ValueError(f"downstream.arms: unknown classifier {clf!r}; choose from {CLASSIFIERS}")
        sets = []
        for group, allowed in GROUPS.items():
            for ts in (groups or {}).get(group) or []:
                if ts not in allowed:
                    right = next((other for other, listed in GROUPS.items() if ts in listed), None)
                    raise ValueError(f"downstream.arms.{clf}.{group} lists {ts!r}: " + (
                        f"move it to downstream.arms.{clf}.{right} (its DVC stage has the inputs it reads)" if right
                        else f"unknown training set; choose from {TRAINSETS}"))
                sets.append(ts)
        if sets:
            out[clf] = sets
    return out
