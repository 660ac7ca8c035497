"""downstream_summary stage: every arm's metrics -> metrics/downstream.json and reports/downstream.md.

For each classifier and real-data fraction: the mean over seeds of each training set's metrics, and the
paired differences (same seeds) of pipeline.verdict.comparisons: every training set against real only, and
real_synthetic and real_synthetic_classic against real_classic (does a synthetic set beat, or add to, classic
augmentation?), for ROC AUC, accuracy and balanced accuracy: the mean over seeds with a 95% CI from a paired
bootstrap over test patients (evaluation.metrics.paired_bootstrap_difference), plus the spread over seeds (t
interval), and the verdict, which needs both intervals on one side of 0 (pipeline.verdict.verdict).

Seeds whose test predictions are identical trained one model (XGBoost draws nothing at random unless the
training set is augmented): the training set's row says ``identical_seeds``, and where both sides of a paired
difference are one model its ``seed_spread`` says ``identical_models`` (its numbers kept: a point). The interval
over seeds then measures nothing; the verdict rests on the bootstrap alone and says so.
"""
from __future__ import annotations

import csv
import json

import numpy as np

from common.io import atomic_file, write_json
from evaluation import metrics as M
from pipeline import outputs
from pipeline.arms import arm_name, planned
from pipeline.verdict import comparisons, identical_models, seed_interval, verdict
from pipeline.params import parse_stage_args
from pipeline.prepared import load_split
from pipeline.tracking import numeric_metrics, stage_run

COMPARED = (M.ROC_AUC, M.ACCURACY, M.BALANCED_ACCURACY)
MARKDOWN_COLUMNS = ("roc_auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "f1")


def summarise(arms: dict[str, dict], downstream: dict, predictions: dict[str, np.ndarray] | None = None, test=None,
              seed: int = 0) -> dict:
    """``predictions``: arm -> test scores (in test-split order); with ``test`` (labels, patients) the paired
    differences get patient-bootstrap CIs, else only the t interval over seeds. With ``predictions``, a training
    set whose seeds predicted identically is flagged ``identical_seeds`` (one model), and a paired difference
    with one model on both sides ``seed_spread.identical_models``."""
    table, diffs = {}, {}
    for clf, trainsets in planned(downstream["arms"]).items():
        for frac in downstream["fractions"]:
            key = f"{clf}.fraction_{float(frac)}"  # dotted: nested in MLflow's flat metric names
            table[key], diffs[key] = {}, {}
            names = {ts: [arm_name(clf, ts, frac, arm_seed) for arm_seed in downstream["seeds"]] for ts in trainsets}
            one_model = {ts: predictions is not None and same_predictions([predictions[arm] for arm in names[ts]])
                         for ts in trainsets}
            for ts in trainsets:
                runs = [arms[arm] for arm in names[ts]]
                table[key][ts] = {metric: _mean([run["metrics"][metric] for run in runs]) for metric in M.METRICS}
                table[key][ts]["seeds"] = len(runs)
                if one_model[ts]:
                    table[key][ts]["identical_seeds"] = True
            for ts, base in comparisons(trainsets):
                set_arms, base_arms = names[ts], names[base]
                over_seeds = {metric: M.paired_difference([arms[arm]["metrics"][metric] for arm in set_arms],
                                                          [arms[arm]["metrics"][metric] for arm in base_arms])
                              for metric in COMPARED}
                if predictions is not None and test is not None:
                    boot = M.paired_bootstrap_difference(
                        test.labels, [predictions[arm] for arm in set_arms], [predictions[arm] for arm in base_arms],
                        [arms[arm]["threshold"] for arm in set_arms], [arms[arm]["threshold"] for arm in base_arms],
                        [row["patient_id"] for row in test.rows], names=COMPARED,
                        n_boot=int(downstream["bootstrap"]["samples"]), seed=seed)
                    flag = {"identical_models": True} if one_model[ts] and one_model[base] else {}
                    diffs[key][f"{ts}-{base}"] = {
                        metric: {**boot[metric], "seed_spread": {**over_seeds[metric], **flag}} for metric in COMPARED}
                else:
                    diffs[key][f"{ts}-{base}"] = over_seeds
    return {"table": table, "paired_differences": diffs}


def same_predictions(scores: list) -> bool:
    """Whether two or more seeds' test scores are identical: the seeds trained one model, and an interval over
    them measures nothing."""
    return len(scores) > 1 and all(np.array_equal(scores[0], other) for other in scores[1:])


def _mean(values):
    present = [value for value in values if value is not None]
    return float(np.mean(present)) if present else None


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def markdown(summary: dict, downstream: dict) -> str:
    lines = ["# Downstream classifiers: real vs real + synthetic", "",
             f"Test: the real held-out test split; means over seeds {downstream['seeds']}. Differences are "
             "paired by seed (same real subset and initialisation) and averaged over seeds. [95% CI]: a paired "
             "bootstrap over test patients (the same resample for both arms), the trained models held fixed; "
             "over seeds: a 95% t interval over the seeds' differences, the test set held fixed. The verdict "
             "calls a sign only when both exclude 0 on the same side; with one seed, training variance is not "
             "measured and the verdict says so. Seeds that predicted identically on both sides trained one model "
             "(XGBoost without random augmentation on the whole training set): no interval over seeds, and the "
             "verdict rests on the bootstrap alone and says so. A row `<set>-<baseline>` is the set's metric minus "
             "its baseline's (real only, or real_classic: classic augmentation); \"helped\" means the set beat "
             "its baseline.", ""]
    for key, rows in summary["table"].items():
        clf, frac = key.split(".fraction_")
        lines += [f"## {clf}, real-data fraction {frac}", "",
                  "| training set | ROC AUC | accuracy | balanced acc. | sensitivity | specificity | F1 |",
                  "|---|---|---|---|---|---|---|"]
        for ts, numbers in rows.items():
            lines.append(f"| {ts} | " + " | ".join(_fmt(numbers[metric]) for metric in MARKDOWN_COLUMNS) + " |")
        lines += ["", "| set - baseline | ΔAUC [95% CI] | ΔAUC over seeds [95% t] | Δaccuracy [95% CI] | "
                  "verdict (AUC) |", "|---|---|---|---|---|"]
        for name, difference in summary["paired_differences"][key].items():
            auc, accuracy = difference[M.ROC_AUC], difference[M.ACCURACY]
            seeds = seed_interval(auc)
            over_seeds = ("one model (seeds identical)" if identical_models(auc)
                          else f"[{_fmt(seeds[0])}, {_fmt(seeds[1])}]")
            lines.append(f"| {name} | {_fmt(auc['mean'])} [{_fmt(auc['ci'][0])}, {_fmt(auc['ci'][1])}] | "
                         f"{over_seeds} | "
                         f"{_fmt(accuracy['mean'])} [{_fmt(accuracy['ci'][0])}, {_fmt(accuracy['ci'][1])}] | "
                         f"{verdict(auc)} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_stage_args(__doc__, argv)
    params = args.params
    downstream = params["downstream"]
    folder = args.path(params["paths"]["downstream_metrics"])
    arms = {}
    try:
        plan = planned(downstream["arms"])
    except ValueError as e:
        raise SystemExit(f"downstream_summary: {e}") from e
    for clf, trainsets in plan.items():
        for ts in trainsets:
            for frac in downstream["fractions"]:
                for arm_seed in downstream["seeds"]:
                    name = arm_name(clf, ts, frac, arm_seed)
                    path = folder / outputs.arm_metrics(name)
                    if not path.exists():
                        raise SystemExit(f"downstream_summary: {path} is missing: run `dvc repro` (it runs the missing arms)")
                    arms[name] = json.loads(path.read_text())
    test = load_split(args.path(params["paths"]["prepared"]), "test")
    reports = args.path(params["paths"]["downstream_reports"])
    predictions = {}
    for name in arms:
        with open(reports / name / outputs.PREDICTIONS, newline="") as fh:
            predictions[name] = np.array([float(row["score"]) for row in csv.DictReader(fh)])
        if len(predictions[name]) != len(test.labels):
            raise SystemExit(f"downstream_summary: {name} has {len(predictions[name])} test predictions, the test "
                             f"split {len(test.labels)}: run `dvc repro` again")
    summary = summarise(arms, downstream, predictions, test, seed=int(params["base"]["seed"]))
    out = args.path(params["paths"]["downstream_summary"])
    write_json(out, summary)
    report = args.path(params["paths"]["downstream_report"])
    with atomic_file(report) as tmp:
        tmp.write_text(markdown(summary, downstream))
    with stage_run("downstream_summary", params, args.root, {"downstream": downstream}) as ml:
        if ml:
            ml.log_metrics(numeric_metrics(summary["table"], "downstream."))
            means = {block: {name: {metric: numbers["mean"] for metric, numbers in difference.items()}
                             for name, difference in differences.items()}
                     for block, differences in summary["paired_differences"].items()}
            ml.log_metrics(numeric_metrics(means, "downstream_diff."))
            ml.log_artifact(str(report))
    print(markdown(summary, downstream))
    return summary


if __name__ == "__main__":
    main()
