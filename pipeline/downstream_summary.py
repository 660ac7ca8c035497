"""downstream_summary stage: every arm's metrics -> metrics/downstream.json and reports/downstream.md.

For each classifier and real-data fraction: the mean over seeds of each training set's metrics, and the
paired difference (same seeds) of real_synthetic, real_classic and synthetic against real only for ROC AUC,
accuracy and balanced accuracy: the mean over seeds with a 95% CI from a paired bootstrap over test
patients (evaluation.metrics.paired_bootstrap_difference), plus the spread over seeds (t interval).
"""
from __future__ import annotations

import csv
import json

import numpy as np

from common.io import atomic_file, write_json
from evaluation import metrics as M
from pipeline import outputs
from pipeline.arms import arm_name, planned, verdict
from pipeline.params import parse_stage_args
from pipeline.prepared import load_split
from pipeline.tracking import numeric_metrics, stage_run

COMPARED = (M.ROC_AUC, M.ACCURACY, M.BALANCED_ACCURACY)


def summarise(arms: dict[str, dict], d: dict, predictions: dict[str, np.ndarray] | None = None, test=None,
              seed: int = 0) -> dict:
    """``predictions``: arm -> test scores (in test-split order); with ``test`` (labels, patients) the paired
    differences get patient-bootstrap CIs, else only the t interval over seeds."""
    table, diffs = {}, {}
    for clf, trainsets in planned(d["arms"]).items():
        for frac in d["fractions"]:
            key = f"{clf}.fraction_{float(frac)}"  # dotted: nested in MLflow's flat metric names
            table[key], diffs[key] = {}, {}
            for ts in trainsets:
                runs = [arms[arm_name(clf, ts, frac, s)] for s in d["seeds"]]
                table[key][ts] = {m: _mean([r["metrics"][m] for r in runs]) for m in M.METRICS}
                table[key][ts]["seeds"] = len(runs)
            for ts in trainsets:
                if ts == "real" or "real" not in trainsets:
                    continue
                a_names = [arm_name(clf, ts, frac, s) for s in d["seeds"]]
                b_names = [arm_name(clf, "real", frac, s) for s in d["seeds"]]
                over_seeds = {m: M.paired_difference([arms[a]["metrics"][m] for a in a_names],
                                                     [arms[b]["metrics"][m] for b in b_names]) for m in COMPARED}
                if predictions is not None and test is not None:
                    boot = M.paired_bootstrap_difference(
                        test.labels, [predictions[a] for a in a_names], [predictions[b] for b in b_names],
                        [arms[a]["threshold"] for a in a_names], [arms[b]["threshold"] for b in b_names],
                        [r["patient_id"] for r in test.rows], names=COMPARED,
                        n_boot=int(d["bootstrap"]["samples"]), seed=seed)
                    diffs[key][f"{ts}-real"] = {m: {**boot[m], "seed_spread": over_seeds[m]} for m in COMPARED}
                else:
                    diffs[key][f"{ts}-real"] = over_seeds
    return {"table": table, "paired_differences": diffs}


def _mean(values):
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def markdown(summary: dict, d: dict) -> str:
    f = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    lines = ["# Downstream classifiers: real vs real + synthetic", "",
             f"Test: the real held-out test split; means over seeds {d['seeds']}. Differences are paired by seed "
             "(same real subset and initialisation) and averaged over seeds; 95% CI from a paired bootstrap over "
             "test patients (the same resample for both arms).", ""]
    for key, rows in summary["table"].items():
        clf, frac = key.split(".fraction_")
        lines += [f"## {clf}, real-data fraction {frac}", "",
                  "| training set | ROC AUC | accuracy | balanced acc. | sensitivity | specificity | F1 |",
                  "|---|---|---|---|---|---|---|"]
        for ts, m in rows.items():
            lines.append(f"| {ts} | {f(m['roc_auc'])} | {f(m['accuracy'])} | {f(m['balanced_accuracy'])} | "
                         f"{f(m['sensitivity'])} | {f(m['specificity'])} | {f(m['f1'])} |")
        lines += ["", "| vs real only | ΔAUC [95% CI] | Δaccuracy [95% CI] | verdict (AUC) |", "|---|---|---|---|"]
        for name, dm in summary["paired_differences"][key].items():
            a, c = dm[M.ROC_AUC], dm[M.ACCURACY]
            lines.append(f"| {name} | {f(a['mean'])} [{f(a['ci'][0])}, {f(a['ci'][1])}] | {f(c['mean'])} "
                         f"[{f(c['ci'][0])}, {f(c['ci'][1])}] | {verdict(a)} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_stage_args(__doc__, argv)
    p = args.params
    d = p["downstream"]
    folder = args.path(p["paths"]["downstream_metrics"])
    arms = {}
    try:
        plan = planned(d["arms"])
    except ValueError as e:
        raise SystemExit(f"downstream_summary: {e}") from e
    for clf, trainsets in plan.items():
        for ts in trainsets:
            for frac in d["fractions"]:
                for s in d["seeds"]:
                    name = arm_name(clf, ts, frac, s)
                    path = folder / outputs.arm_metrics(name)
                    if not path.exists():
                        raise SystemExit(f"downstream_summary: {path} is missing: run `dvc repro` (it runs the missing arms)")
                    arms[name] = json.loads(path.read_text())
    test = load_split(args.path(p["paths"]["prepared"]), "test")
    reports = args.path(p["paths"]["downstream_reports"])
    predictions = {}
    for name in arms:
        with open(reports / name / outputs.PREDICTIONS, newline="") as f:
            predictions[name] = np.array([float(r["score"]) for r in csv.DictReader(f)])
        if len(predictions[name]) != len(test.labels):
            raise SystemExit(f"downstream_summary: {name} has {len(predictions[name])} test predictions, the test "
                             f"split {len(test.labels)}: run `dvc repro` again")
    summary = summarise(arms, d, predictions, test, seed=int(p["base"]["seed"]))
    out = args.path(p["paths"]["downstream_summary"])
    write_json(out, summary)
    report = args.path(p["paths"]["downstream_report"])
    with atomic_file(report) as tmp:
        tmp.write_text(markdown(summary, d))
    with stage_run("downstream_summary", p, args.root, {"downstream": d}) as ml:
        if ml:
            ml.log_metrics(numeric_metrics(summary["table"], "downstream."))
            ml.log_metrics(numeric_metrics({k: {n: {m: v["mean"] for m, v in dm.items()} for n, dm in diff.items()}
                                            for k, diff in summary["paired_differences"].items()}, "downstream_diff."))
            ml.log_artifact(str(report))
    print(markdown(summary, d))
    return summary


if __name__ == "__main__":
    main()
