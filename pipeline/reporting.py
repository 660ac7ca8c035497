"""The run report, shared by the report stage (pipeline/report.py) and ``python -m pipeline.vtt_score`` (which
renders it again with the readers' scores). Data first, then a view, one way:

    stage outputs --summarise--> summary: reports/summary.json (DVC metrics); its numbers are the MLflow
                                 metrics of the parent run, named by their dotted paths
    stage outputs + summary --report_figures.draw--> figures: matplotlib charts and the stages' own PNGs
    summary + figures --report_page.render--> reports/index.html (template pipeline/report_page.html.j2)

The summary holds every number and fact the page shows; the page adds words and pictures only. Sections:
``run`` (identity: data hash, data source, GAN params, downstream seeds; not metrics: they are MLflow params
and tags), ``data``, ``gan``, ``fidelity`` (per extractor) with ``fidelity_setup`` and ``memorisation``,
``downstream`` (classifier -> fraction -> training set, and paired differences ``<set>-<baseline>`` with their CI
and verdict), ``vtt_export``, and ``vtt`` once the readers' answers are scored.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from common.io import atomic_file, write_json
from evaluation import metrics as M
from pipeline import outputs, report_figures, report_page
from pipeline.verdict import identical_models, seed_interval, verdict
from pipeline.prepared import dataset_hash
from pipeline.tracking import log_to_parent, numeric_metrics, stage_run

GAN_SHOWN = ("num_classes", "width", "steps", "batch", "loss", "diffaugment", "r1_gamma", "ema_decay", "lr_g", "lr_d",
             "lr_decay")
QUARANTINE_LISTED = 50  # quarantined files listed by name; the rest are counted
TRAINSET_METRICS = (M.ROC_AUC, M.ACCURACY, M.BALANCED_ACCURACY, M.SENSITIVITY, M.SPECIFICITY, M.F1, M.PR_AUC,
                    "seeds")
FIDELITY_KEYS = ("fid", "relative_fid", "fid_real_halves", "kid", "kid_std", "precision", "recall",
                 "n_synthetic", "n_real", "n_half", "relative_fid_draws")
READER_KEYS = ("n", "accuracy", "sensitivity_synthetic", "specificity", "binomial_p_vs_chance")


@dataclass(frozen=True)
class ReportInputs:
    """What the report reads: the stage outputs (paths.* made absolute) and the params it shows."""
    prepared: Path
    gan_reports: Path
    fidelity_metrics: Path
    fidelity_reports: Path
    downstream_summary: Path
    downstream_reports: Path
    vtt_export: Path
    vtt_export_shown: str  # paths.vtt as params name it (relative to the project): shown on the page
    vtt_scores: Path
    data_source: str
    gan_params: dict
    downstream_seeds: list
    examples_per_class: int

    @classmethod
    def from_args(cls, args) -> ReportInputs:
        params, paths = args.params, args.params["paths"]
        return cls(prepared=args.path(paths["prepared"]), gan_reports=args.path(paths["gan_reports"]),
                   fidelity_metrics=args.path(paths["fidelity_metrics"]),
                   fidelity_reports=args.path(paths["fidelity_reports"]),
                   downstream_summary=args.path(paths["downstream_summary"]),
                   downstream_reports=args.path(paths["downstream_reports"]),
                   vtt_export=args.path(paths["vtt"]), vtt_export_shown=str(paths["vtt"]),
                   vtt_scores=args.path(paths["vtt_metrics"]), data_source=str(params["data"]["source"]),
                   gan_params={k: params["gan"][k] for k in GAN_SHOWN},
                   downstream_seeds=list(params["downstream"]["seeds"]),
                   examples_per_class=int(params["report"]["examples_per_class"]))


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


# ---------------------------------------------------------------- stage outputs -> summary

def data_summary(prepared: Path) -> dict:
    """The prepared set: counts (images, patients, per split and class), where the split came from, and the
    quarantine (reasons counted, the first files listed: ``quarantined`` counts them all)."""
    prepare_summary = read_json(prepared / outputs.SUMMARY) or {}
    splits = prepare_summary.get("splits", {})
    quarantined = report_figures.read_csv(prepared / outputs.QUARANTINE)
    return {"images": prepare_summary.get("prepared"), "quarantined": prepare_summary.get("quarantined"),
            "patients": prepare_summary.get("patients"),
            **{f"{split}_images": counts.get("images") for split, counts in splits.items()},
            "source": prepare_summary.get("source"), "kind": prepare_summary.get("kind"),
            "size": prepare_summary.get("size"), "found": prepare_summary.get("found"),
            "split_from": prepare_summary.get("split_from"),
            "duplicate_groups": prepare_summary.get("duplicate_groups"),
            "classes": prepare_summary.get("classes", []), "splits": splits,
            "quarantine_reasons": dict(sorted(prepare_summary.get("quarantine_reasons", {}).items())),
            "quarantine_listed": [{"path": row["path"], "reason": row["reason"]}  # quarantine.csv: one row each
                                  for row in quarantined[:QUARANTINE_LISTED]]}


def gan_summary(gan_reports: Path) -> dict:
    """The GAN's training: steps, the generator kept and its domain FID, where it ran."""
    gan = read_json(gan_reports / outputs.SUMMARY) or {}
    return {k: gan.get(k) for k in ("steps", "epochs", "fid_domain_best", "fid_domain_last", "generator_step",
                                    "train_images", "device", "precision", "cuda_graphs", "world_size")} | {
        "classes": gan.get("classes", [])}


def fidelity_numbers(numbers: dict) -> dict:
    """The report's fidelity figures of one part (overall, a class): relative FID's range over the draws as two
    numbers (``relative_fid_low``/``_high``, MLflow metrics), null where it has none."""
    low, high = numbers.get("relative_fid_range") or (None, None)
    return {**{k: numbers.get(k) for k in FIDELITY_KEYS}, "relative_fid_low": low, "relative_fid_high": high}


def fidelity_summary(fidelity: dict | None) -> dict:
    """``fidelity`` (extractor -> overall numbers and ``per_class``), ``fidelity_setup`` (the sets compared,
    extractors that could not run and why) and ``memorisation`` (per space)."""
    if not fidelity:
        return {"fidelity": {}, "fidelity_setup": {}, "memorisation": {}}
    computed, unavailable = {}, {}
    for name, result in fidelity["extractors"].items():
        if "unavailable" in result:
            unavailable[name] = result["unavailable"]
            continue
        computed[name] = fidelity_numbers(result["overall"])
        computed[name]["per_class"] = {cls: fidelity_numbers(numbers)
                                       for cls, numbers in result.get("per_class", {}).items()}
    setup = {k: fidelity[k] for k in ("reference_split", "n_synthetic", "n_reference", "n_train")}
    memorisation = {space: {"synthetic_below": audit["fraction_synthetic_below"],
                            "synthetic_below_ci_low": audit["fraction_synthetic_below_ci"][0],
                            "synthetic_below_ci_high": audit["fraction_synthetic_below_ci"][1],
                            "heldout_below": audit["fraction_heldout_below"],
                            "heldout_below_ci_low": audit["fraction_heldout_below_ci"][0],
                            "heldout_below_ci_high": audit["fraction_heldout_below_ci"][1],
                            "median_synthetic_distance": audit.get("median_synthetic_distance"),
                            "median_heldout_distance": audit.get("median_heldout_distance")}
                    for space, audit in fidelity.get("memorisation", {}).items()}
    return {"fidelity": computed, "fidelity_setup": setup | {"unavailable": unavailable},
            "memorisation": memorisation}


def paired_difference(difference: dict) -> dict:
    """A paired difference against its baseline: ROC AUC and accuracy with their 95% CIs (over test patients),
    ROC AUC's t interval over seeds, and the verdict (which needs both of ROC AUC's). ``roc_auc_identical_models``,
    only where true: the seeds trained one model on both sides, and the interval over seeds measures nothing."""
    auc, accuracy = difference[M.ROC_AUC], difference[M.ACCURACY]
    seeds = seed_interval(auc)
    return {"roc_auc": auc["mean"], "roc_auc_ci_low": auc["ci"][0], "roc_auc_ci_high": auc["ci"][1],
            "roc_auc_seeds_ci_low": seeds[0], "roc_auc_seeds_ci_high": seeds[1],
            **({"roc_auc_identical_models": True} if identical_models(auc) else {}),
            "accuracy": accuracy["mean"], "accuracy_ci_low": accuracy["ci"][0],
            "accuracy_ci_high": accuracy["ci"][1], "verdict": verdict(auc)}


def downstream_summary(downstream: dict | None) -> dict:
    """classifier -> ``fraction_<f>`` -> training set -> test metrics (means over seeds), and ->
    ``<set>-<baseline>`` (pipeline.verdict.comparisons) -> paired difference (the entries that carry a ``verdict``)."""
    if not downstream:
        return {}
    summary: dict = {}
    for block, rows in downstream["table"].items():
        classifier, fraction = block.split(".fraction_")
        part = summary.setdefault(classifier, {}).setdefault(f"fraction_{fraction}", {})
        for trainset, numbers in rows.items():
            part[trainset] = {k: numbers.get(k) for k in TRAINSET_METRICS}
        for name, difference in downstream["paired_differences"].get(block, {}).items():
            part[name] = paired_difference(difference)
    return summary


def vtt_export_summary(folder: Path, shown: str) -> dict:
    """The blinded set sent to readers: where it is, its size and key; {} before vtt_export has run."""
    export = read_json(folder / outputs.SUMMARY)
    if not export:
        return {}
    return {"folder": shown, **{k: export.get(k) for k in ("images", "real_split", "display_size", "dicom",
                                                          "key_version", "key_sha256",
                                                          "synthetic_in_set_shown_in_report",
                                                          "synthetic_in_set_on_contact_sheet")},
            "per_truth_and_class": export.get("per_truth_and_class", {})}


def vtt_score_summary(scores: dict | None, key_version: str | None) -> dict:
    """The readers' scores for this export ({} when not scored, or scored against another export's key):
    pooled accuracy with its CI, the binomial test (one reader only), the equivalence test (when the scores have
    one), agreement, and one row per reader (a list, so reader names never become metric names)."""
    if not scores or not scores.get("scored", True) or scores.get("key_version") != key_version:
        return {}
    pooled = scores["pooled"]
    summary = {"accuracy": pooled["accuracy"], "accuracy_ci_low": pooled["accuracy_95ci"][0],
               "accuracy_ci_high": pooled["accuracy_95ci"][1], "binomial_p": pooled["binomial_p_vs_chance"],
               "readers": len(scores["readers"])}
    if "equivalence" in pooled:  # scores written before vtt.equivalence_margin existed have none
        equivalence = pooled["equivalence"]
        low, high = equivalence["ci_90"] or (None, None)
        summary |= {"equivalence_margin": equivalence["margin"], "equivalence_ci_low": low,
                    "equivalence_ci_high": high, "equivalence_p": equivalence["p"],
                    "equivalent": equivalence["equivalent"]}
    if "agreement" in scores:
        agreement = scores["agreement"]
        summary |= {"kappa": agreement["kappa"], "agreement_method": agreement["method"],
                    "agreement_items": agreement["items"],
                    **{k: agreement[k] for k in ("kappa_undefined",) if k in agreement}}
    summary["per_reader"] = [{"reader": reader, **{k: numbers.get(k) for k in READER_KEYS},
                              "accuracy_ci_low": numbers["accuracy_95ci"][0],
                              "accuracy_ci_high": numbers["accuracy_95ci"][1],
                              "equivalent": numbers.get("equivalence", {}).get("equivalent"),
                              "equivalence_ci": numbers.get("equivalence", {}).get("ci_90")}
                             for reader, numbers in {**scores["readers"], "pooled": pooled}.items()]
    return summary


def summarise(inputs: ReportInputs) -> dict:
    """Every number and fact of the report, from the stage outputs on disk. Only what the stage's inputs decide:
    the page is a DVC out, so no date, git commit or experiment name (DVC's run cache may restore it into
    another experiment with the same inputs); those are tags of the MLflow parent run, which the page names."""
    vtt_export = vtt_export_summary(inputs.vtt_export, inputs.vtt_export_shown)
    summary = {"run": {"data_hash": dataset_hash(inputs.prepared), "data_source": inputs.data_source,
                       "gan": dict(inputs.gan_params), "downstream_seeds": list(inputs.downstream_seeds)},
               "data": data_summary(inputs.prepared), "gan": gan_summary(inputs.gan_reports),
               **fidelity_summary(read_json(inputs.fidelity_metrics)),
               "downstream": downstream_summary(read_json(inputs.downstream_summary)),
               "vtt_export": vtt_export}
    scores = vtt_score_summary(read_json(inputs.vtt_scores), vtt_export.get("key_version"))
    if scores:
        summary["vtt"] = scores
    return summary


def mlflow_metrics(summary: dict) -> dict[str, float]:
    """The summary's finite numbers under their dotted paths, but for the run's identity (MLflow params)."""
    return numeric_metrics({section: part for section, part in summary.items() if section != "run"})


# ---------------------------------------------------------------- the stage

def build(args) -> dict:
    """Write the summary and the page from the outputs on disk; returns the summary."""
    inputs = ReportInputs.from_args(args)
    summary = summarise(inputs)
    page = report_page.render(summary, report_figures.draw(inputs, summary))
    paths = args.params["paths"]
    write_json(args.path(paths["report_summary"]), summary)
    with atomic_file(args.path(paths["report"])) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return summary


def log(params: dict, root: Path, summary: dict, files: list[Path]) -> None:
    """The headline metrics and the page on a ``report`` child run and on the pipeline's parent run."""
    with stage_run("report", params, root, {"report": params["report"]}) as ml:
        if ml:
            metrics = mlflow_metrics(summary)
            ml.log_metrics(metrics)
            for path in files:
                ml.log_artifact(str(path))
            log_to_parent(ml, metrics, files)


def run(args) -> dict:
    """Build the page and summary, and log them; returns the summary."""
    summary = build(args)
    files = [args.path(args.params["paths"][k]) for k in ("report", "report_summary")]
    log(args.params, args.root, summary, files)
    print(f"report: {files[0]}, {files[1]}")
    return summary
