"""The downstream classifiers (evaluation/downstream.py): classic augmentation, the CNN's epochs and its
channels_last guard, the CNN under fp32 and bf16, and both classifiers learning and choosing weights and
threshold on validation only."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import separable_float16


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


@pytest.mark.parametrize("name", ["CNNClassifier", "XGBoostClassifier"])
def test_a_validation_split_of_one_class_is_refused_by_name(name):
    """Epoch, trees and threshold are chosen on validation by ROC AUC and Youden's J: one class leaves them
    undefined (the CNN used to fail on a missing state dict)."""
    from evaluation import downstream

    x, y = separable_float16(16)
    with pytest.raises(ValueError, match="validation split holds one class only"):
        getattr(downstream, name)().fit(x, y, x[:4], np.zeros(4, dtype=int))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cnn_trains_under_each_precision(precision):
    x, y = separable_float16(48)
    from evaluation.downstream import CNNClassifier

    ref = CNNClassifier(width=8, epochs=2, batch=16, random_state=1).fit(x[:32], y[:32], x[32:], y[32:])
    clf = CNNClassifier(width=8, epochs=2, batch=16, random_state=1, precision=precision).fit(
        x[:32], y[:32], x[32:], y[32:])
    p, p_ref = clf.predict_proba(x), ref.predict_proba(x)
    assert p.shape == (48, 2) and np.isfinite(p).all() and np.allclose(p.sum(1), 1, atol=1e-5)
    assert {q.dtype for q in clf.model_.parameters()} == {torch.float32}
    if precision == "fp32":
        assert np.array_equal(p, p_ref)                 # same seed, same draws: the same model
    else:
        assert np.abs(p - p_ref).max() < 0.05 and not np.array_equal(p, p_ref)
