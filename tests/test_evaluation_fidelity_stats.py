"""Fidelity statistics beyond FID (evaluation/fidelity_stats.py): KID, precision/recall, relative FID over draws,
memorisation audit."""
import numpy as np
import pytest

from conftest import gauss
from evaluation import fidelity as fd
from evaluation import fidelity_stats as fs


def test_kid_of_two_samples_of_one_distribution_is_near_zero():
    m = fs.fidelity_metrics(gauss(400), gauss(400, seed=1), kid_subsets=20)
    far = fs.fidelity_metrics(gauss(400), gauss(400, shift=1.0, seed=1), kid_subsets=20)
    assert abs(m[fs.KID]) < 0.05 * far[fs.KID] and m[fs.KID_SUBSET] == 400
    assert m[fs.N_SYNTHETIC] == 400 and m[fs.N_REAL] == 400


def test_precision_recall_of_identical_sets_are_one():
    a = gauss(300)
    m = fs.fidelity_metrics(a, a.copy(), kid_subsets=5)
    assert m[fs.PRECISION] == pytest.approx(1.0) and m[fs.RECALL] == pytest.approx(1.0)
    off = fs.fidelity_metrics(gauss(300, shift=5.0), a, kid_subsets=5)
    assert off[fs.PRECISION] < 0.05 and off[fs.RECALL] < 0.05


def test_relative_fid_is_about_one_for_a_perfect_generator():
    rng = np.random.default_rng(0)
    good = fs.relative_fid(gauss(2000, seed=3), gauss(2000, seed=4), rng)
    bad = fs.relative_fid(gauss(2000, shift=0.5, seed=3), gauss(2000, seed=4), rng)
    assert 0.7 < good["relative_fid"] < 1.4 and bad["relative_fid"] > 3
    assert good["n_half"] == 1000 and good["n_synthetic_used"] == 1000


def test_memorisation_audit_flags_copies_not_fresh_samples():
    train, held = gauss(500, seed=1), gauss(300, seed=2)
    copies = train[:200] + 1e-4
    fresh = gauss(200, seed=3)
    m_copy = fs.memorisation_audit(copies, train, held)
    m_fresh = fs.memorisation_audit(fresh, train, held)
    assert m_copy["fraction_synthetic_below"] == 1.0 and (m_copy["nearest_train"] == np.arange(200)).all()
    assert m_fresh["fraction_synthetic_below"] < 0.05
    # the held-out rate is measured on the half that did not set the threshold: an estimate of 1%, with its CI
    low, high = m_fresh["fraction_heldout_below_ci"]
    assert m_fresh["heldout_split"] and m_fresh["n_heldout_threshold"] == m_fresh["n_heldout_measured"] == 150
    assert low <= m_fresh["fraction_heldout_below"] <= high and low <= 0.01 <= high
    low, high = m_copy["fraction_synthetic_below_ci"]
    assert high == 1.0 and low > 0.98


def test_held_out_halves_share_no_patient():
    """The memorisation threshold comes from one half of the held-out images and the held-out rate from the
    other: split by patient, so no patient's near-identical images sit on both sides."""
    groups = np.repeat(np.arange(40), np.random.default_rng(0).integers(1, 6, 40))
    a, b = fs.patient_halves(groups, np.random.default_rng(1))
    assert len(a) == len(b) > len(groups) / 4 and not set(groups[a]) & set(groups[b])
    train, held = gauss(300, seed=1), gauss(len(groups), seed=2)
    m = fs.memorisation_audit(gauss(100, seed=3), train, held, halves=(a, b))
    assert m["n_heldout_threshold"] == m["n_heldout_measured"] == len(a)
    one = fs.memorisation_audit(gauss(100, seed=3), train, held,
                                halves=fs.patient_halves(np.zeros(len(groups), int), np.random.default_rng(1)))
    assert not one["heldout_split"] and one["n_heldout_measured"] == len(groups)   # one patient: no halves


def test_fid_few_is_fid_where_rows_are_fewer_than_features():
    """The n x n route relative FID takes below the feature dimension gives torch-fidelity's number (it takes
    the D x D matrix's eigenvalues), at equal and unequal sizes, for identical and for shifted sets."""
    a, b = gauss(40, d=64, seed=1), gauss(30, d=64, shift=0.2, seed=2) * 1.3
    assert fs.fid_few(a, b) == pytest.approx(fd.fid(a, b), rel=1e-6)
    assert abs(fs.fid_few(a, a)) < 1e-9
    assert fs.fid_few(gauss(300, d=16, seed=1), gauss(300, d=16, seed=2)) == pytest.approx(
        fd.fid(gauss(300, d=16, seed=1), gauss(300, d=16, seed=2)), rel=1e-6)   # more rows than features: too


def test_relative_fid_is_a_median_over_draws_with_their_range():
    """One draw of the halves moves relative FID a lot at small n: the figure is the median over draws, each
    draw the one relative_fid gives with the i-th spawned generator, with the draws' 2.5th-97.5th range."""
    syn, real = gauss(150, shift=0.15, seed=3), gauss(160, seed=4)
    summary, runs = fs.relative_fid_draws(syn, real, np.random.default_rng(5), 9)
    one = [fs.relative_fid(syn, real, g)["relative_fid"] for g in np.random.default_rng(5).spawn(9)]
    assert [r["relative_fid"] for r in runs] == one and len(set(one)) == 9
    assert summary["relative_fid"] == np.median(one) and summary["relative_fid_draws"] == 9
    low, high = summary["relative_fid_range"]
    assert min(one) < low < summary["relative_fid"] < high < max(one)
    assert summary["fid_real_halves"] == np.median([r["fid_real_halves"] for r in runs])
    assert summary["n_half"] == 80
    again, _ = fs.relative_fid_draws(syn, real, np.random.default_rng(5), 9)
    assert again == summary                                            # seeded: the same figure every run
    with pytest.raises(ValueError, match="at least one draw"):
        fs.relative_fid_draws(syn, real, np.random.default_rng(5), 0)
    same = np.repeat(gauss(1, seed=6), 40, axis=0)   # every real image alike: the halves' FID is 0, no ratio
    undefined, _ = fs.relative_fid_draws(syn, same, np.random.default_rng(5), 3)
    assert undefined["relative_fid"] is None and undefined["relative_fid_range"] is None
    assert undefined["note"] == "relative FID undefined in 3 of 3 draws (real halves' FID 0)"


def test_precision_recall_at_equal_sizes_and_their_real_scale():
    """Precision/recall's k-NN radii shrink with n: they are taken at equal sizes, and beside relative FID at
    the half size, with the same two numbers for two real halves (their value for a perfect generator)."""
    m = fs.fidelity_metrics(gauss(4000, seed=1), gauss(200, seed=2), kid_subsets=5)
    assert m["n_precision_recall"] == 200 and m[fs.N_SYNTHETIC] == 4000
    r = fs.relative_fid(gauss(2000, seed=3), gauss(2000, seed=4), np.random.default_rng(0))
    assert abs(r["precision_vs_half"] - r["precision_real_halves"]) < 0.05
    assert abs(r["recall_vs_half"] - r["recall_real_halves"]) < 0.05
    short = fs.relative_fid(gauss(300, seed=3), gauss(2000, seed=4), np.random.default_rng(0))
    assert short["n_half"] == short["n_synthetic_used"] == 300   # the halves cut to the synthetic count
