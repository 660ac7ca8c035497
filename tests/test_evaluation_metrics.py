"""Classification metrics agree with scikit-learn; bootstrap CIs over patients; paired differences."""
import numpy as np
import pytest
from sklearn import metrics as skm

from evaluation import metrics as m


def fixed():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.clip(y * 0.3 + rng.uniform(0, 0.7, 200), 0, 1)
    return y, s


def test_metrics_agree_with_sklearn():
    y, s = fixed()
    got = m.classification_metrics(y, s, threshold=0.4)
    pred = (s >= 0.4).astype(int)
    assert got[m.ACCURACY] == pytest.approx(skm.accuracy_score(y, pred))
    assert got[m.BALANCED_ACCURACY] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert got[m.ROC_AUC] == pytest.approx(skm.roc_auc_score(y, s))
    assert got[m.PR_AUC] == pytest.approx(skm.average_precision_score(y, s))
    assert got[m.F1] == pytest.approx(skm.f1_score(y, pred))
    assert got[m.SENSITIVITY] == pytest.approx(skm.recall_score(y, pred))
    assert got[m.SPECIFICITY] == pytest.approx(skm.recall_score(1 - y, 1 - pred))


def test_perfect_classifier_ci_is_one_one():
    y = np.array([0, 0, 1, 1, 0, 1, 1, 0])
    ci = m.bootstrap_ci(y, y.astype(float), patients=np.arange(8) // 2, n_boot=200)
    for k in m.METRICS:
        assert ci[k] == [1.0, 1.0], k


def test_bootstrap_resamples_patients_not_images():
    y, s = fixed()
    one_patient = m.bootstrap_ci(y, s, patients=np.zeros(200), n_boot=50)  # one patient: no variation
    assert one_patient[m.ROC_AUC][0] == one_patient[m.ROC_AUC][1]
    many = m.bootstrap_ci(y, s, patients=np.arange(200), n_boot=300)
    lo, hi = many[m.ROC_AUC]
    assert lo < skm.roc_auc_score(y, s) < hi and hi - lo > 0.02


def test_youden_threshold_separates_separable_scores():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    t = m.youden_threshold(y, s)
    assert 0.3 < t <= 0.6 and m.classification_metrics(y, s, t)[m.ACCURACY] == 1.0


def test_paired_difference():
    d = m.paired_difference([0.9, 0.8, 0.85], [0.8, 0.8, 0.8])
    assert d["mean"] == pytest.approx(0.05) and d["n"] == 3 and d["ci"][0] < 0.05 < d["ci"][1]
    assert m.paired_difference([0.9], [0.8])["ci"] == [None, None]
    # the t interval by hand: mean 0.05, sd 0.05, n 3 -> 0.05 +- t(0.975, 2) * 0.05 / sqrt(3)
    half = 4.302652729911275 * 0.05 / 3 ** 0.5
    assert d["ci"] == pytest.approx([0.05 - half, 0.05 + half])
    assert m.paired_difference([0.9, 0.9], [0.8, 0.8])["ci"] == pytest.approx([0.1, 0.1])  # no spread


def test_paired_bootstrap_difference():
    y, s = fixed()
    patients = np.arange(200) // 2
    same = m.paired_bootstrap_difference(y, [s, s], [s, s], [0.5, 0.5], [0.5, 0.5], patients, n_boot=100)
    assert same[m.ROC_AUC]["mean"] == 0 and same[m.ROC_AUC]["ci"] == [0.0, 0.0]
    better = np.where(y == 1, s + 0.2, s)  # A separates the classes more
    d = m.paired_bootstrap_difference(y, [better], [s], [0.5], [0.5], patients, n_boot=300)
    assert d[m.ROC_AUC]["mean"] > 0 and d[m.ROC_AUC]["ci"][0] > 0      # helped, CI excludes 0
    assert d[m.ROC_AUC]["seeds"] == 1 and d[m.ROC_AUC]["ci"][0] < d[m.ROC_AUC]["mean"] < d[m.ROC_AUC]["ci"][1]
