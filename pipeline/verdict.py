"""Which paired differences are reported (a training set against its baseline: real only, or classic
augmentation), the verdict on each (helped / hurt / no clear difference), and the intervals it rests on. Used by
downstream_summary, the report and bench/study_table.py; not by the arm stages, so changing what is compared or
how a difference is called reruns the summary and the report, never a classifier.
"""
from __future__ import annotations

# The training sets that add synthetic images to the real ones are also set against real_classic: classic
# augmentation is the cheap alternative a synthetic set has to beat (real_synthetic) or add to
# (real_synthetic_classic).
OVER_CLASSIC = ("real_synthetic", "real_synthetic_classic")


def comparisons(trainsets) -> list[tuple[str, str]]:
    """The (training set, baseline) pairs downstream_summary reports, each where both are in ``trainsets``: every
    set against real, then OVER_CLASSIC against real_classic, in ``trainsets``' order. Named ``<set>-<baseline>``
    in the summaries."""
    return ([(ts, "real") for ts in trainsets if ts != "real" and "real" in trainsets]
            + [(ts, "real_classic") for ts in trainsets if ts in OVER_CLASSIC and "real_classic" in trainsets])


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
