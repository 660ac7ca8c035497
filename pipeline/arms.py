"""The downstream arms: their names, the training sets each classifier runs (params ``downstream.arms``)
and the verdict on a paired difference. Shared by the downstream, downstream_summary and report stages, so
no stage module imports another (and none of them pulls in torch or MONAI through a name).

``downstream.arms.<classifier>.real`` lists the training sets that read real images only, and
``...synthetic`` those that also read the synthetic set. dvc.yaml runs the two groups as separate matrix
stages, so a new generator re-runs the synthetic arms and leaves the real-only ones (and their results) alone.
"""
from __future__ import annotations

CLASSIFIERS = ("cnn", "xgboost")
REAL_ONLY = ("real", "real_classic")            # real images (real_classic: with flips, rotations, jitter)
WITH_SYNTHETIC = ("real_synthetic", "synthetic")  # read the synthesize stage's images too
TRAINSETS = REAL_ONLY + WITH_SYNTHETIC
GROUPS = {"real": REAL_ONLY, "synthetic": WITH_SYNTHETIC}


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


def seed_interval(diff: dict) -> list:
    """A paired difference's 95% t interval over seeds ([None, None] when none is recorded)."""
    return (diff.get("seed_spread") or {}).get("ci", [None, None])


def identical_models(diff: dict) -> bool:
    """Whether a paired difference's seeds trained one model on both sides (identical test predictions, as
    downstream_summary records it in ``seed_spread``): its interval over seeds is a point that measures nothing."""
    return bool((diff.get("seed_spread") or {}).get("identical_models"))


def verdict(diff: dict) -> str:
    """helped / hurt / no clear difference, from a paired difference's 95% intervals: ``ci`` and, when there,
    ``seed_spread``'s t interval over seeds. In downstream_summary ``ci`` is the paired bootstrap over test
    patients, which holds the trained models fixed, and the t interval holds the test set fixed: neither covers
    both, so a sign is called only when every interval there is excludes 0 on the same side. One seed measures
    no training variance, and its verdict says so. Seeds that trained one model on both sides
    (``identical_models``) have no training variance to measure: the sign rests on ``ci`` alone, and the verdict
    says "(one model: seeds identical)" rather than claim replication."""
    intervals = [diff["ci"]]
    seeds = diff.get("n", diff.get("seeds"))
    one_model = identical_models(diff)
    if "seed_spread" in diff and not one_model:
        intervals.append(diff["seed_spread"]["ci"])
        seeds = diff["seed_spread"]["n"]
    intervals = [(lo, hi) for lo, hi in intervals if lo is not None]
    if not intervals:
        return "one seed: no CI"
    if all(lo > 0 for lo, _ in intervals):
        call = "helped"
    elif all(hi < 0 for _, hi in intervals):
        call = "hurt"
    else:
        return "no clear difference"
    if one_model:
        return f"{call} (one model: seeds identical)"
    return f"{call} (1 seed)" if seeds == 1 else call
