"""Downstream arms: generated from params, patient-level subsampling, the test split kept out of every choice."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import stage_args, tiny_params
from pipeline import downstream, downstream_summary, prepare, synthesize, train_extractor, train_gan
from pipeline.arms import arm_name, planned

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
    assert "| real_synthetic |" in (project / "reports/downstream.md").read_text()


def test_classic_augment_draws_flips_rotations_and_intensity_per_image_from_its_generator():
    from evaluation.downstream import classic_augment

    x = torch.zeros(400, 1, 32, 32)
    x[:, :, :, :8] = 0.8                                  # a bright band on the left
    out = classic_augment(x, torch.Generator().manual_seed(3))
    again = classic_augment(x, torch.Generator().manual_seed(3))
    assert torch.equal(out, again) and out.shape == x.shape
    assert out.min() >= -1 and out.max() <= 1
    flipped = out[:, 0, 16, -4:].mean(1) > out[:, 0, 16, :4].mean(1)   # the band moved to the right
    assert 0.4 < flipped.float().mean() < 0.6
    corners = torch.stack([out[:, 0, 0, 0], out[:, 0, 0, -1], out[:, 0, -1, 0], out[:, 0, -1, -1]], 1)
    rotated = corners.min(1).values < -0.2                # a corner turned black (-1), only when rotated
    assert 0.4 < rotated.float().mean() < 0.6
    middle = out[:, 0, 16, 16]                            # 0 before: scale leaves it, shift moves it by <= 0.1
    assert middle.abs().max() <= 0.1 + 1e-6 and 0.35 < (middle != 0).float().mean() < 0.65


def test_every_cnn_epoch_draws_epoch_size_images_so_added_synthetic_images_add_no_steps():
    from evaluation.downstream import CNNClassifier

    clf = CNNClassifier(batch=10, epoch_size=100)
    gen = torch.Generator().manual_seed(0)
    bigger = torch.cat(clf._epoch(300, gen, torch.device("cpu")))      # real + synthetic: 100 of 300 drawn
    assert len(bigger) == 100 and len(set(bigger.tolist())) == 100
    smaller = torch.cat(clf._epoch(40, gen, torch.device("cpu")))      # fewer images: each drawn 2-3 times
    assert len(smaller) == 100 and np.bincount(smaller.numpy(), minlength=40).min() >= 2
    default = CNNClassifier(batch=10)._epoch(37, gen, torch.device("cpu"))
    assert sorted(torch.cat(default).tolist()) == list(range(37)) and len(default) == 4


def test_the_cnn_trains_in_channels_last_only_where_onednn_computes_it_safely():
    """A width-4 ResNet has strided 1x1 convolutions with 4 input channels, whose weight gradient oneDNN's AVX2
    kernel computes past its workspace in channels_last (heap corruption on AVX2-only CPUs, as in CI). Limited to
    AVX2 here, the CNN trains to the end; the wide net keeps channels_last, which is what makes it fast."""
    from evaluation.downstream import _net, channels_last_is_safe

    cpu = torch.device("cpu")
    assert not channels_last_is_safe(_net("resnet10", 4), cpu)
    assert channels_last_is_safe(_net("resnet10", 16), cpu)
    assert channels_last_is_safe(_net("resnet10", 4), torch.device("meta"))   # only CPUs need the guard
    code = ("import numpy as np; from evaluation.downstream import CNNClassifier\n"
            "rng = np.random.default_rng(0); x = rng.uniform(-1, 1, (16, 1, 32, 32)).astype('float32')\n"
            "y = np.arange(16) % 2\n"
            "CNNClassifier(width=4, epochs=2, batch=8).fit(x, y, x, y); print('trained')")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "MALLOC_CHECK_": "3", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "trained" in proc.stdout, proc.stderr[-2000:]


# ---- the classifiers themselves (evaluation/downstream.py), on phantoms a classifier must separate ------

def disc_or_not(n: int, res: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(n, 1, res, res) noisy dark fields in [-1, 1]; label 1 images carry a bright disc at a random place."""
    rows, cols = np.mgrid[:res, :res]
    labels = np.arange(n) % 2
    images = rng.normal(-0.5, 0.15, (n, 1, res, res))
    for image, label in zip(images, labels):
        if label:
            row, col, radius = rng.uniform(0.3, 0.7) * res, rng.uniform(0.3, 0.7) * res, rng.uniform(0.12, 0.2) * res
            image[0][(rows - row) ** 2 + (cols - col) ** 2 < radius ** 2] += 1.0
    return np.clip(images, -1, 1).astype(np.float32), labels


@pytest.fixture(scope="module")
def phantom_splits():
    images, labels = disc_or_not(160, 32, np.random.default_rng(0))
    return {name: (images[part], labels[part])
            for name, part in (("train", slice(0, 80)), ("val", slice(80, 120)), ("test", slice(120, 160)))}


def rows_of(*arrays) -> set[bytes]:
    return {row.tobytes() for a in arrays for row in np.asarray(a, dtype=np.float32)}


def test_cnn_learns_and_chooses_epoch_weights_and_threshold_on_validation(phantom_splits, monkeypatch):
    from evaluation import downstream as lib
    from evaluation.metrics import classification_metrics, youden_threshold

    (x, y), (xv, yv), (xt, yt) = phantom_splits["train"], phantom_splits["val"], phantom_splits["test"]
    seen = []   # (training mode, input rows) of every forward pass of the network

    def record(module, args):
        seen.append((module.training, args[0].detach().numpy().copy()))

    def spied_net(arch, width):
        net = build_net(arch, width)
        net.register_forward_pre_hook(record)
        return net

    build_net = lib._net
    monkeypatch.setattr(lib, "_net", spied_net)
    clf = lib.CNNClassifier(width=8, epochs=6, batch=16, lr=1e-2, random_state=0)
    val_by_epoch = {}
    clf.fit(x, y, xv, yv, on_epoch=lambda epoch, auc: val_by_epoch.update({epoch: clf.predict_proba(xv)[:, 1]}))
    in_fit = list(seen)
    test_scores = clf.predict_proba(xt)[:, 1]
    test_forward = seen[-1][1]

    assert classification_metrics(yt, test_scores)["roc_auc"] >= 0.95
    aucs = [h["val_roc_auc"] for h in clf.history_]
    assert clf.best_epoch_ == 1 + int(np.argmax(aucs)) and clf.val_roc_auc_ == max(aucs)
    assert clf.best_epoch_ < clf.epochs   # on this seed a later epoch is no better: the keep-best path is used
    val_scores = clf.predict_proba(xv)[:, 1]
    np.testing.assert_allclose(val_scores, val_by_epoch[clf.best_epoch_], atol=1e-6)   # the best epoch's weights
    assert clf.threshold_ == youden_threshold(yv, val_scores)
    assert clf.threshold_ != youden_threshold(y, clf.predict_proba(x)[:, 1])   # not the training set's threshold
    train_rows, val_rows, test_rows = rows_of(x), rows_of(xv), rows_of(xt)
    trained_on = rows_of(*[batch for training, batch in in_fit if training])
    evaluated = rows_of(*[batch for training, batch in in_fit if not training])
    assert trained_on == train_rows and evaluated == val_rows   # gradients from train only; val only scored
    assert not (trained_on | evaluated) & test_rows
    assert rows_of(test_forward) == test_rows   # the spy does see test images, once predict_proba gets them


def test_xgboost_learns_and_chooses_rounds_and_threshold_on_validation(phantom_splits, monkeypatch):
    import xgboost

    from evaluation.downstream import XGBoostClassifier, pixel_features
    from evaluation.metrics import classification_metrics, youden_threshold

    (x, y), (xv, yv), (xt, yt) = phantom_splits["train"], phantom_splits["val"], phantom_splits["test"]
    fitted = []   # (features, labels, eval_set) of every booster fit

    def spied_fit(self, X, y, eval_set=None, **kwargs):
        fitted.append((np.array(X), np.array(y), [(np.array(a), np.array(b)) for a, b in eval_set]))
        return original_fit(self, X, y, eval_set=eval_set, **kwargs)

    original_fit = xgboost.XGBClassifier.fit
    monkeypatch.setattr(xgboost.XGBClassifier, "fit", spied_fit)
    clf = XGBoostClassifier(n_estimators=60, random_state=0, n_jobs=1).fit(x, y, xv, yv)

    assert classification_metrics(yt, clf.predict_proba(xt)[:, 1])["roc_auc"] >= 0.95
    val_auc = clf.model_.evals_result()["validation_0"]["auc"]
    assert clf.best_iteration_ == int(np.argmax(val_auc)) and clf.best_iteration_ < 59   # stopped on val AUC
    assert clf.threshold_ == youden_threshold(yv, clf.predict_proba(xv)[:, 1])
    assert clf.threshold_ != youden_threshold(y, clf.predict_proba(x)[:, 1])
    [(features, labels, [(val_features, val_labels)])] = fitted
    np.testing.assert_array_equal(features, pixel_features(x))
    np.testing.assert_array_equal(labels, y)
    np.testing.assert_array_equal(val_features, pixel_features(xv))
    np.testing.assert_array_equal(val_labels, yv)
    assert not rows_of(features, val_features) & rows_of(pixel_features(xt))
