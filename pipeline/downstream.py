"""downstream stage, one arm of the DVC matrix: classifier x training set x real-data fraction x seed.

    python -m pipeline.downstream --arm CLASSIFIER TRAINSET FRACTION SEED

CLASSIFIER: cnn | xgboost. TRAINSET: real | real_synthetic | synthetic | real_classic (real images with
flips, small rotations and intensity jitter) | real_synthetic_classic (real and synthetic images, both with that
augmentation). FRACTION: share of the real training *patients* kept
(stratified by label). The classifier picks its epoch/rounds and decision threshold on the real val split
and reads the real test split once. Writes metrics/downstream/<arm>.json (metrics with bootstrap 95% CIs
over test patients) and reports/downstream/<arm>/ (roc.csv, predictions.csv for DVC plots).
"""
from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import torch

from common.io import atomic_dir, write_json
from common.seeding import stage_rng
from evaluation import metrics as M
from evaluation.downstream import CNNClassifier, XGBoostClassifier, pixel_features
from pipeline import outputs
from pipeline.arms import CLASSIC, CLASSIFIERS, GROUPS, TRAINSETS, arm_name, planned
from pipeline.params import parse_stage_args
from pipeline.prepared import load_split, load_synthetic
from pipeline.runtime import resolve_device, resolve_precision
from pipeline.tracking import numeric_metrics, stage_run

def subsample_patients(patients: list[str], labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of the images of round(fraction x patients) patients per class (a patient's class: its most
    frequent label), so patients stay whole and the class mix is kept. At least one patient per class."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    by_patient: dict[str, list[int]] = {}
    for i, patient in enumerate(patients):
        by_patient.setdefault(patient, []).append(i)
    ids = sorted(by_patient)
    patient_labels = np.array([np.bincount(labels[by_patient[patient]]).argmax() for patient in ids])
    keep = []
    for label in np.unique(patient_labels):
        members = [ids[i] for i in np.flatnonzero(patient_labels == label)]
        kept = max(1, int(round(fraction * len(members))))
        keep.extend(rng.choice(members, kept, replace=False).tolist())
    return np.sort(np.concatenate([by_patient[patient] for patient in keep]))


def build_classifier(name: str, trainset: str, params: dict, seed: int, domain_features, n_real: int | None = None):
    """The arm's classifier. ``n_real``: the real training count; every CNN arm draws that many images per
    epoch, so the training sets of one fraction get the same optimiser steps (a set with synthetic images added
    gets variety, not extra training)."""
    downstream = params["downstream"]
    if name == "cnn":
        cnn, device = downstream["cnn"], resolve_device(downstream["device"])
        return CNNClassifier(arch=cnn["arch"], width=int(cnn["width"]), epochs=int(cnn["epochs"]),
                             batch=int(cnn["batch"]), lr=float(cnn["lr"]), augment=trainset in CLASSIC,
                             device=str(device), random_state=seed,
                             precision=resolve_precision(device),  # bf16 on GPUs with native bf16
                             epoch_size=n_real)
    if name == "xgboost":
        xgb = downstream["xgboost"]
        kinds = list(xgb["features"])

        def features(X):
            parts = []
            if "pixels" in kinds:
                parts.append(pixel_features(X, int(xgb["pixel_size"])))
            if "domain" in kinds:
                parts.append(domain_features(X))
            return np.concatenate(parts, axis=1)

        return XGBoostClassifier(feature_fn=features, n_estimators=int(xgb["n_estimators"]),
                                 max_depth=int(xgb["max_depth"]), learning_rate=float(xgb["learning_rate"]),
                                 augment_copies=1 if trainset in CLASSIC else 0, random_state=seed)
    raise ValueError(f"unknown classifier {name!r}; choose from {CLASSIFIERS}")


def training_set(trainset: str, real_x, real_y, syn_x, syn_y):
    if trainset in ("real", "real_classic"):
        return real_x, real_y
    if trainset in ("real_synthetic", "real_synthetic_classic"):
        return np.concatenate([real_x, syn_x]), np.concatenate([real_y, syn_y])
    if trainset == "synthetic":
        return syn_x, syn_y
    raise ValueError(f"unknown training set {trainset!r}; choose from {TRAINSETS}")


def run_arm(classifier, train_x, train_y, val, test) -> tuple[np.ndarray, object]:
    """Fit on train with val for every choice, then read the test images once."""
    classifier.fit(train_x, train_y, val.images, val.labels)
    return classifier.predict_proba(test.images)[:, 1], classifier


def load_training_data(args, trainset: str, fraction: float, seed: int):
    """The real splits, the indices of the real training images this arm keeps (its fraction of the patients)
    and the synthetic images and labels (None when the training set has none)."""
    params = args.params
    prepared = args.path(params["paths"]["prepared"])
    train, val, test = (load_split(prepared, split) for split in ("train", "val", "test"))
    if len(train.classes) != 2:
        raise SystemExit(f"downstream: binary classification only; the data has classes {train.classes}")
    rng = stage_rng(params["base"]["seed"], "downstream", "subsample", f"{fraction:g}", seed)
    keep = subsample_patients([row["patient_id"] for row in train.rows], train.labels, fraction, rng)
    syn_x = syn_y = None
    if "synthetic" in trainset:
        syn_x, syn_y, _ = load_synthetic(args.path(params["paths"]["synthetic"]))
        if (syn_y < 0).any():
            raise SystemExit("downstream: synthetic training sets need a conditional GAN (gan.num_classes > 0)")
    return train, val, test, keep, syn_x, syn_y


def domain_feature_fn(args, classifier_name: str):
    """The domain extractor's features as a function of images, for XGBoost arms that use them; else None."""
    params = args.params
    if classifier_name != "xgboost" or "domain" not in params["downstream"]["xgboost"]["features"]:
        return None
    from evaluation.features import domain_net_from_state, extract
    net = domain_net_from_state(torch.load(args.path(params["paths"]["extractor"]) / outputs.EXTRACTOR,
                                           map_location="cpu", weights_only=True))
    return lambda images: extract(net, images)


def arm_result(params: dict, arm: dict, classifier, test, scores: np.ndarray, counts: dict) -> dict:
    """The arm's metrics file: what it trained on, what it chose on val, and its test metrics with bootstrap
    95% CIs over test patients."""
    bootstrap = params["downstream"]["bootstrap"]
    patients = [row["patient_id"] for row in test.rows]
    point = M.classification_metrics(test.labels, scores, classifier.threshold_)
    ci = M.bootstrap_ci(test.labels, scores, patients, classifier.threshold_, n_boot=int(bootstrap["samples"]),
                        seed=int(stage_rng(params["base"]["seed"], "downstream", "bootstrap", arm["arm"])
                                 .integers(2**31)))
    selected = {k: getattr(classifier, k) for k in ("best_epoch_", "best_iteration_", "val_roc_auc_")
                if hasattr(classifier, k)}
    return {**arm, **counts, "n_test": int(len(test.labels)), "n_test_patients": len(set(patients)),
            "threshold": classifier.threshold_, "selected": selected, "metrics": point, "ci95": ci,
            "bootstrap_samples": int(bootstrap["samples"])}


def write_reports(folder: Path, test, scores: np.ndarray, classes: list[str], threshold: float) -> None:
    """roc.csv and predictions.csv (DVC plots; downstream_summary reads the scores, so they keep every digit: a
    rounded score can cross the threshold, which is one of the validation scores)."""
    from sklearn.metrics import roc_curve
    fpr, tpr, _ = roc_curve(test.labels, scores)
    with atomic_dir(folder) as tmp:
        with open(tmp / outputs.ROC, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["fpr", "tpr"])
            writer.writerows(zip(np.round(fpr, 6), np.round(tpr, 6)))
        with open(tmp / outputs.PREDICTIONS, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["actual", "predicted", "score"])
            writer.writerows((classes[actual], classes[int(score >= threshold)], float(score))
                             for actual, score in zip(test.labels, scores))


def log_run(args, arm: dict, result: dict, out: Path, reports: Path, seconds: float) -> None:
    params, name = args.params, arm["arm"]
    arm_params = {k: arm[k] for k in ("classifier", "trainset", "fraction", "seed")}
    with stage_run(f"downstream {name}", params, args.root, {"base": params["base"], "downstream": params["downstream"],
                                                             "arm": arm_params}) as ml:
        if ml:
            ml.set_tag("downstream_arm", name)
            ml.log_metrics({**numeric_metrics(result["metrics"], "test."), "seconds": seconds})
            ml.log_artifact(str(out))
            ml.log_artifact(str(reports / outputs.ROC))
            ml.log_artifact(str(reports / outputs.PREDICTIONS))


def _arguments(ap) -> None:
    ap.add_argument("--arm", nargs=4, required=True, metavar=("CLASSIFIER", "TRAINSET", "FRACTION", "SEED"))
    ap.add_argument("--group", choices=tuple(GROUPS), help="the dvc.yaml stage group running the arm: a training "
                    "set listed in the wrong group is refused before it reads inputs its stage does not declare")


def main(argv=None) -> dict:
    args = parse_stage_args(__doc__, argv, _arguments)
    params = args.params
    classifier_name, trainset, fraction, seed = args.extra.arm
    if args.extra.group:
        try:
            planned({classifier_name: {args.extra.group: [trainset]}})
        except ValueError as e:
            raise SystemExit(f"downstream: {e}") from e
    fraction, seed = float(fraction), int(seed)
    name = arm_name(classifier_name, trainset, fraction, seed)
    arm = {"arm": name, "classifier": classifier_name, "trainset": trainset, "fraction": fraction, "seed": seed}
    train, val, test, keep, syn_x, syn_y = load_training_data(args, trainset, fraction, seed)
    domain = domain_feature_fn(args, classifier_name)
    try:
        classifier = build_classifier(classifier_name, trainset, params, seed, domain, n_real=len(keep))
        train_x, train_y = training_set(trainset, train.images[keep], train.labels[keep], syn_x, syn_y)
    except ValueError as e:
        raise SystemExit(f"downstream: {e}") from e
    started = time.perf_counter()
    scores, classifier = run_arm(classifier, train_x, train_y, val, test)
    seconds = time.perf_counter() - started
    counts = {"n_train_real": int(len(keep)),
              "n_train_real_patients": len({train.rows[i]["patient_id"] for i in keep}),
              "n_train_synthetic": int(len(syn_x)) if syn_x is not None and trainset != "real" else 0,
              "n_train_total": int(len(train_x))}
    result = arm_result(params, arm, classifier, test, scores, counts)
    out = args.path(params["paths"]["downstream_metrics"]) / outputs.arm_metrics(name)
    write_json(out, result)
    reports = args.path(params["paths"]["downstream_reports"]) / name
    write_reports(reports, test, scores, train.classes, classifier.threshold_)
    log_run(args, arm, result, out, reports, seconds)
    point, ci = result["metrics"], result["ci95"]
    auc = "n/a" if point["roc_auc"] is None else f"{point['roc_auc']:.3f}"
    print(f"downstream {name}: AUC {auc}, accuracy {point['accuracy']:.3f} (95% CI {ci['accuracy'][0]:.3f}-"
          f"{ci['accuracy'][1]:.3f}) on {len(test.labels)} test images [{seconds:.0f} s]")
    return result

if __name__ == "__main__":
    main()
