"""Downstream arms: generated from params, patient-level subsampling, the test split kept out of every choice."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from conftest import stage_args, tiny_params
from evaluation.metrics import classification_metrics
from pipeline import downstream, downstream_summary, prepare, synthesize, train_extractor, train_gan
from pipeline.arms import arm_name, planned
from pipeline.verdict import comparisons, verdict

pytestmark = pytest.mark.xdist_group("downstream-project")  # the tests build on one module-scoped project

ROOT = Path(__file__).resolve().parents[1]


def test_subsampling_keeps_patients_whole_and_classes_stratified():
    rng = np.random.default_rng(0)
    patients = [f"p{i // 3}" for i in range(600)]            # 200 patients, 3 images each
    labels = np.array([(i // 3) % 4 == 0 for i in range(600)], dtype=int)  # 25% positive patients
    keep = downstream.subsample_patients(patients, labels, 0.25, rng)
    kept = {patients[i] for i in keep}
    assert len(keep) == 3 * len(kept)                         # whole patients only
    assert len(kept) == 50 and sum(labels[keep]) / len(keep) == pytest.approx(0.25, abs=0.02)  # per-class rounding
    assert len(downstream.subsample_patients(patients, labels, 1.0, rng)) == 600
    with pytest.raises(ValueError):
        downstream.subsample_patients(patients, labels, 0.0, rng)


def test_arms_are_generated_from_params(tmp_path):
    for f in ("dvc.yaml", "params.yaml"):
        (tmp_path / f).write_text((ROOT / f).read_text())
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["downstream"].update(arms={"cnn": {"real": ["real"], "synthetic": ["synthetic"]},
                                      "xgboost": {"real": [], "synthetic": []}}, fractions=[1.0, 0.25], seeds=[3, 4])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc/config").write_text("[core]\n    no_scm = True\n    analytics = false\n")
    out = subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"], cwd=tmp_path, text=True,
                         capture_output=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    arms = sorted(n for n in out.stdout.split() if n.startswith("downstream_") and "@" in n)
    expected = sorted(f"downstream_cnn_{t}@{arm_name('cnn', t, f, s)}" for t in ("real", "synthetic")
                      for f in (1.0, 0.25) for s in (3, 4))
    assert arms == expected, out.stderr


def test_a_training_set_in_the_wrong_group_is_refused():
    """A synthetic set listed with the real-only arms would run in a stage that does not depend on the
    synthetic images (stale results after a new GAN): refused with the fix."""
    ok = {"cnn": {"real": ["real", "real_classic"], "synthetic": ["synthetic"]}, "xgboost": {"real": []}}
    assert planned(ok) == {"cnn": ["real", "real_classic", "synthetic"]}
    with pytest.raises(ValueError, match="move it to downstream.arms.cnn.synthetic"):
        planned({"cnn": {"real": ["real_synthetic"]}})
    with pytest.raises(ValueError, match="unknown training set"):
        planned({"cnn": {"synthetic": ["fake"]}})
    with pytest.raises(ValueError, match="unknown classifier"):
        planned({"svm": {"real": ["real"]}})


def test_a_verdict_needs_the_patient_and_the_seed_intervals_on_one_side():
    def diff(ci, seeds_ci, n=3):
        return {"mean": 0.0, "ci": ci, "seeds": n, "seed_spread": {"mean": 0.0, "ci": seeds_ci, "n": n}}

    assert verdict(diff([0.01, 0.03], [0.005, 0.04])) == "helped"
    assert verdict(diff([-0.03, -0.01], [-0.04, -0.001])) == "hurt"
    assert verdict(diff([0.01, 0.03], [-0.01, 0.05])) == "no clear difference"     # another training may differ
    assert verdict(diff([-0.01, 0.03], [0.01, 0.02])) == "no clear difference"     # other test patients may
    assert verdict(diff([0.01, 0.03], [0.02, 0.02])) == "helped"                   # equal differences, not marked
    assert verdict(diff([0.01, 0.03], [None, None], n=1)) == "helped (1 seed)"
    one_model = diff([0.01, 0.03], [-0.01, -0.01])
    one_model["seed_spread"]["identical_models"] = True                             # its point measures nothing
    assert verdict(one_model) == "helped (one model: seeds identical)"
    assert verdict({**one_model, "ci": [-0.01, 0.03]}) == "no clear difference"
    assert verdict({"mean": 0.02, "ci": [0.01, 0.03], "n": 3}) == "helped"          # a t interval alone
    assert verdict({"mean": 0.02, "ci": [None, None], "n": 1}) == "one seed: no CI"


def xgboost_arms(labels, scores: dict) -> tuple[dict, dict]:
    """Arms and their test predictions as downstream_summary reads them: (training set, seed) -> test scores of an
    xgboost arm at fraction 1.0, threshold 0.5. Each arm gets its own array (equal arrays, not one object)."""
    arms, predictions = {}, {}
    for (ts, seed), values in scores.items():
        name = arm_name("xgboost", ts, 1.0, seed)
        predictions[name] = np.array(values, copy=True)
        arms[name] = {"metrics": classification_metrics(labels, predictions[name], 0.5), "threshold": 0.5}
    return arms, predictions


def one_model_study(vary: bool) -> tuple[dict, dict, dict, SimpleNamespace]:
    """Three seeds of xgboost on real and real_synthetic: real's seeds predict identically; real_synthetic's too
    unless ``vary``. real_synthetic separates the classes, real barely does (a clear ΔAUC > 0)."""
    rng = np.random.default_rng(0)
    labels = np.tile([0, 1], 40)
    test = SimpleNamespace(labels=labels, rows=[{"patient_id": f"p{i // 2}"} for i in range(len(labels))])
    real = labels * 0.2 + rng.random(len(labels))                # ROC AUC a little over 0.5
    helped = labels + 0.5 * rng.random(len(labels))               # separates the classes
    downstream = {"arms": {"xgboost": {"real": ["real"], "synthetic": ["real_synthetic"]}}, "fractions": [1.0],
                  "seeds": [0, 1, 2], "bootstrap": {"samples": 200}}
    scores = {}
    for seed in downstream["seeds"]:
        jitter = rng.random(len(labels)) * 1.5 if vary else 0.0  # another model (and ROC AUC) per seed
        scores["real", seed], scores["real_synthetic", seed] = real, helped + jitter
    arms, predictions = xgboost_arms(labels, scores)
    return arms, downstream, predictions, test


def test_seeds_that_trained_one_model_claim_no_interval_over_seeds():
    """Deterministic arms (XGBoost without random augmentation) give the same predictions whatever the seed:
    the seeds are one model, the summary says so, and the verdict rests on the bootstrap alone."""
    arms, downstream, predictions, test = one_model_study(vary=False)
    summary = downstream_summary.summarise(arms, downstream, predictions, test)
    table = summary["table"]["xgboost.fraction_1.0"]
    assert table["real"]["identical_seeds"] is True and table["real_synthetic"]["identical_seeds"] is True
    difference = summary["paired_differences"]["xgboost.fraction_1.0"]["real_synthetic-real"]
    for metric in downstream_summary.COMPARED:
        spread = difference[metric]["seed_spread"]
        assert spread["identical_models"] is True and spread["n"] == 3 and spread["ci"] == [spread["mean"]] * 2
    auc = difference["roc_auc"]
    assert auc["ci"][0] > 0 and verdict(auc) == "helped (one model: seeds identical)"
    md = downstream_summary.markdown(summary, downstream)
    assert (f"| real_synthetic-real | {auc['mean']:.3f} [{auc['ci'][0]:.3f}, {auc['ci'][1]:.3f}] | one model "
            "(seeds identical) |") in md
    assert "| helped (one model: seeds identical) |" in md
    # without predictions nothing can be told: no mark
    bare = downstream_summary.summarise(arms, downstream)
    assert "identical_seeds" not in bare["table"]["xgboost.fraction_1.0"]["real"]


def test_synthetic_sets_are_also_compared_with_classic_augmentation():
    """Does a synthetic set beat classic augmentation, or add to it? real_synthetic and real_synthetic_classic are
    paired with real_classic too (the same seeds and test resamples), not only with real; synthetic-only is not."""
    assert comparisons(["real", "real_classic", "real_synthetic", "synthetic", "real_synthetic_classic"]) == [
        ("real_classic", "real"), ("real_synthetic", "real"), ("synthetic", "real"), ("real_synthetic_classic", "real"),
        ("real_synthetic", "real_classic"), ("real_synthetic_classic", "real_classic")]
    assert comparisons(["real_classic", "real_synthetic"]) == [("real_synthetic", "real_classic")]
    assert comparisons(["real", "real_synthetic"]) == [("real_synthetic", "real")]
    rng = np.random.default_rng(1)
    labels = np.tile([0, 1], 40)
    test = SimpleNamespace(labels=labels, rows=[{"patient_id": f"p{i // 2}"} for i in range(len(labels))])
    sets = {"real": 0.3, "real_classic": 0.6, "real_synthetic": 0.6, "real_synthetic_classic": 1.2}  # separation
    downstream = {"arms": {"xgboost": {"real": ["real", "real_classic"],
                                       "synthetic": ["real_synthetic", "real_synthetic_classic"]}},
                  "fractions": [1.0], "seeds": [0, 1, 2], "bootstrap": {"samples": 200}}
    scores = {}
    for seed in downstream["seeds"]:
        noise = rng.random(len(labels))   # real_synthetic predicts as real_classic does: their difference is exactly 0
        scores.update({(ts, seed): labels * separation + noise for ts, separation in sets.items()})
    arms, predictions = xgboost_arms(labels, scores)
    diffs = downstream_summary.summarise(arms, downstream, predictions, test)["paired_differences"]
    diffs = diffs["xgboost.fraction_1.0"]
    assert list(diffs) == ["real_classic-real", "real_synthetic-real", "real_synthetic_classic-real",
                           "real_synthetic-real_classic", "real_synthetic_classic-real_classic"]
    same = diffs["real_synthetic-real_classic"]["roc_auc"]
    assert same["mean"] == 0 and same["ci"] == [0, 0] and verdict(same) == "no clear difference"
    added = diffs["real_synthetic_classic-real_classic"]["roc_auc"]
    assert added["mean"] == pytest.approx(diffs["real_synthetic_classic-real"]["roc_auc"]["mean"]
                                          - diffs["real_classic-real"]["roc_auc"]["mean"])
    assert added["ci"][0] > 0 and added["seed_spread"]["ci"][0] > 0 and verdict(added) == "helped"
    md = downstream_summary.markdown({"table": {}, "paired_differences": {}}, downstream)
    assert "real_classic: classic augmentation" in md
    # "one model" is judged per side: real and real_synthetic deterministic, real_classic's seeds varying
    fixed = {ts: labels * separation + rng.random(len(labels)) for ts, separation in sets.items()}
    arms, predictions = xgboost_arms(labels, {
        (ts, seed): fixed[ts] if ts in ("real", "real_synthetic") else labels * separation + rng.random(len(labels))
        for seed in downstream["seeds"] for ts, separation in sets.items()})
    diffs = downstream_summary.summarise(arms, downstream, predictions, test)["paired_differences"]
    diffs = diffs["xgboost.fraction_1.0"]
    assert diffs["real_synthetic-real"]["roc_auc"]["seed_spread"]["identical_models"] is True
    assert "identical_models" not in diffs["real_synthetic-real_classic"]["roc_auc"]["seed_spread"]


def test_classic_augmentation_goes_with_the_training_set():
    """real_classic and real_synthetic_classic train with classic augmentation (the CNN on every batch, XGBoost on
    one augmented copy of every image), the others without; real_synthetic_classic reads real_synthetic's images."""
    params = {"downstream": {"device": "cpu", "cnn": {"arch": "resnet10", "width": 4, "epochs": 1, "batch": 4,
                                                      "lr": 1e-3},
                             "xgboost": {"features": ["pixels"], "pixel_size": 4, "n_estimators": 2, "max_depth": 2,
                                         "learning_rate": 0.1}}}
    for ts in downstream.TRAINSETS:
        augmented = ts in ("real_classic", "real_synthetic_classic")
        assert downstream.build_classifier("cnn", ts, params, 0, None, n_real=4).augment is augmented
        assert downstream.build_classifier("xgboost", ts, params, 0, None).augment_copies == int(augmented)
    real_x, syn_x = np.zeros((3, 1, 4, 4)), np.ones((2, 1, 4, 4))
    real_y, syn_y = np.array([0, 1, 0]), np.array([1, 1])
    for got, want in zip(downstream.training_set("real_synthetic_classic", real_x, real_y, syn_x, syn_y),
                         (np.concatenate([real_x, syn_x]), np.array([0, 1, 0, 1, 1]))):
        assert np.array_equal(got, want)


def test_seeds_that_trained_different_models_keep_their_interval():
    """One side's seeds varying (real_classic's augmentation, a CNN's initialisation) is training variance the
    interval over seeds measures: no mark on the difference, though real's own seeds are one model."""
    arms, downstream, predictions, test = one_model_study(vary=True)
    summary = downstream_summary.summarise(arms, downstream, predictions, test)
    table = summary["table"]["xgboost.fraction_1.0"]
    assert table["real"]["identical_seeds"] is True and "identical_seeds" not in table["real_synthetic"]
    auc = summary["paired_differences"]["xgboost.fraction_1.0"]["real_synthetic-real"]["roc_auc"]
    assert "identical_models" not in auc["seed_spread"] and auc["seed_spread"]["ci"][0] < auc["seed_spread"]["ci"][1]
    assert "seeds identical" not in verdict(auc)
    md = downstream_summary.markdown(summary, downstream)
    low, high = auc["seed_spread"]["ci"]
    assert f"| [{low:.3f}, {high:.3f}] |" in md and "| one model (seeds identical) |" not in md


def test_predictions_keep_every_digit_of_the_scores(tmp_path):
    """downstream_summary recomputes thresholded metrics from predictions.csv; the threshold is a validation
    score, and a rounded test score equal to it would fall below it."""
    import csv
    from types import SimpleNamespace

    scores = np.array([0.30000004, 1 / 3, 0.2], dtype=np.float32)
    downstream.write_reports(tmp_path / "arm", SimpleNamespace(labels=np.array([1, 1, 0])), scores,
                             ["NORMAL", "PNEUMONIA"], threshold=float(scores[0]))
    with open(tmp_path / "arm" / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert np.array_equal(np.array([float(r["score"]) for r in rows]), scores.astype(float))
    assert [r["predicted"] for r in rows] == ["PNEUMONIA", "PNEUMONIA", "NORMAL"]


@pytest.fixture(scope="module")
def project(tmp_path_factory, demo_archive):
    project = tiny_params(tmp_path_factory.mktemp("downstream"), demo_archive,
                          extractor=dict(width=4, dim=16, steps=5, batch=16),
                          gan=dict(width=0.25, steps=4, batch=8, fid_every=0, grid_every=0),
                          downstream=dict(fractions=[1.0, 0.5], seeds=[0], cnn=dict(width=4, epochs=2, batch=16),
                                          xgboost=dict(n_estimators=20), bootstrap=dict(samples=50)))
    for stage in (prepare, train_extractor, train_gan, synthesize):
        stage.main(stage_args(project))
    return project


class Spy:
    """A classifier that remembers what it was shown."""

    def __init__(self):
        self.fit_arrays, self.predicted = [], []

    def fit(self, X, y, X_val, y_val):
        self.fit_arrays = [X, X_val]
        self.threshold_ = 0.5
        return self

    def predict_proba(self, X):
        self.predicted.append(X)
        s = np.linspace(0, 1, len(X))
        return np.column_stack([1 - s, s])


def test_test_split_is_never_seen_by_selection(project, monkeypatch):
    spy = Spy()
    monkeypatch.setattr(downstream, "build_classifier", lambda *a, **k: spy)
    # seed 1 is not one of the module's arms (seeds [0]): the spy's output never stands in for a real arm
    downstream.main([*stage_args(project), "--arm", "cnn", "real_synthetic", "1.0", "1"])
    from pipeline.prepared import load_split
    test = load_split(project / "data/prepared", "test")
    test_hashes = {x.tobytes() for x in test.images}
    for arr in spy.fit_arrays:
        assert not any(x.tobytes() in test_hashes for x in np.asarray(arr)), "a test image reached fit()"
    assert len(spy.predicted) == 1 and np.array_equal(spy.predicted[0], test.images)  # read once


def test_an_arm_in_the_wrong_stage_group_is_refused_before_reading(project, monkeypatch):
    """dvc.yaml's real-only stages do not declare the synthetic set: an arm listed there that reads it (it
    would read a stale set, or none) stops before any input is read, naming the group to move it to."""
    monkeypatch.setattr(downstream, "load_training_data", lambda *a: pytest.fail("inputs read"))
    with pytest.raises(SystemExit, match=r"downstream.arms.cnn.real lists 'real_synthetic': move it to "
                                         r"downstream.arms.cnn.synthetic"):
        downstream.main([*stage_args(project), "--group", "real", "--arm", "cnn", "real_synthetic", "1.0", "0"])


def arm_result(project, classifier, trainset, fraction):
    """A seed-0 arm's result: its saved JSON when another test of this module has run it (tests run in any
    order, on any worker), else a run of the arm."""
    saved = project / f"metrics/downstream/{arm_name(classifier, trainset, fraction, 0)}.json"
    if saved.exists():
        return json.loads(saved.read_text())
    return downstream.main([*stage_args(project), "--arm", classifier, trainset, fraction, "0"])


@pytest.mark.parametrize("classifier", ["cnn", "xgboost"])
def test_arms(project, classifier):
    for ts in downstream.TRAINSETS:
        for frac in ("1.0", "0.5"):
            r = arm_result(project, classifier, ts, frac)
            assert set(r["metrics"]) == {"accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "f1", "sensitivity",
                                         "specificity"}
            lo, hi = r["ci95"]["accuracy"]
            assert lo <= r["metrics"]["accuracy"] <= hi
            assert (r["n_train_synthetic"] > 0) == ("synthetic" in ts)
            assert r["n_train_real_patients"] > 0
    name = arm_name(classifier, "real", 0.5, 0)
    saved = json.loads((project / f"metrics/downstream/{name}.json").read_text())
    full = json.loads((project / f"metrics/downstream/{arm_name(classifier, 'real', 1.0, 0)}.json").read_text())
    assert saved["n_train_real"] < full["n_train_real"]
    assert (project / f"reports/downstream/{name}/roc.csv").is_file()


def test_summary_of_both_classifiers(project):
    for clf in ("cnn", "xgboost"):
        for ts in downstream.TRAINSETS:
            for frac in ("1.0", "0.5"):
                arm_result(project, clf, ts, frac)
    s = downstream_summary.main(stage_args(project))
    assert set(s["table"]) == {"cnn.fraction_1.0", "cnn.fraction_0.5", "xgboost.fraction_1.0", "xgboost.fraction_0.5"}
    d = s["paired_differences"]["cnn.fraction_1.0"]["real_synthetic-real"]["roc_auc"]
    assert d["seeds"] == 1 and d["ci"][0] <= d["mean"] <= d["ci"][1] and d["seed_spread"]["n"] == 1
    assert set(s["paired_differences"]["xgboost.fraction_0.5"]) == {
        "real_classic-real", "real_synthetic-real", "synthetic-real", "real_synthetic-real_classic"}
    assert "| real_synthetic |" in (project / "reports/downstream.md").read_text()
