"""The torch-fidelity metrics (evaluation/fidelity.py): FID, KID, precision/recall, relative FID, memorisation."""
import numpy as np
import pytest
import torch

from evaluation import fidelity as fd
from evaluation.features import ExtractorConfig, extractor_state, train_extractor
from evaluation.fid import fid as scipy_fid


@pytest.fixture(scope="module")
def domain():
    """A small trained domain extractor and 64 images of two classes at 32x32."""
    cfg = ExtractorConfig(resolution=32, num_classes=2, width=8, dim=32)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(64, 1, 32, 32, generator=g) * 2 - 1).numpy()
    y = np.arange(64) % 2
    x[y == 1, :, :16] = -1
    net = train_extractor(x, y, cfg, steps=20, batch=16, seed=1)
    return extractor_state(net), x


def gauss(n, d=16, shift=0.0, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


def test_fid_of_identical_sets_is_zero_and_agrees_with_scipy():
    a, b = gauss(600), gauss(600, shift=0.3, seed=1)
    assert abs(fd.fid(a, a)) < 1e-6
    assert fd.fid(a, b) == pytest.approx(scipy_fid(a, b), rel=1e-3)


def test_fid_does_not_depend_on_batch_size(domain):
    state, x = domain
    f7 = fd.features(x, fd.DOMAIN, batch=7, domain_state=state)
    f64 = fd.features(x, fd.DOMAIN, batch=64, domain_state=state)
    assert f7.shape == (64, 32)
    torch.testing.assert_close(f7, f64, rtol=1e-5, atol=1e-5)
    y = x.copy()
    y[:, :, 8:] = -1
    other = fd.features(y, fd.DOMAIN, batch=64, domain_state=state)
    assert fd.fid(f7, other) == pytest.approx(fd.fid(f64, other), rel=1e-6)


def test_kid_of_two_samples_of_one_distribution_is_near_zero():
    m = fd.fidelity_metrics(gauss(400), gauss(400, seed=1), kid_subsets=20)
    far = fd.fidelity_metrics(gauss(400), gauss(400, shift=1.0, seed=1), kid_subsets=20)
    assert abs(m[fd.KID]) < 0.05 * far[fd.KID] and m[fd.KID_SUBSET] == 400
    assert m[fd.N_SYNTHETIC] == 400 and m[fd.N_REAL] == 400


def test_precision_recall_of_identical_sets_are_one():
    a = gauss(300)
    m = fd.fidelity_metrics(a, a.copy(), kid_subsets=5)
    assert m[fd.PRECISION] == pytest.approx(1.0) and m[fd.RECALL] == pytest.approx(1.0)
    off = fd.fidelity_metrics(gauss(300, shift=5.0), a, kid_subsets=5)
    assert off[fd.PRECISION] < 0.05 and off[fd.RECALL] < 0.05


def test_a_collapsed_generator_has_high_precision_and_low_recall(domain):
    """Kynkäänniemi et al.: precision is the share of generated images inside the real manifold, recall the
    share of real images inside the generated one. A generator collapsed onto 3 real images (20 noisy copies
    of each) is all inside the real manifold but covers almost none of it; with the arguments the other way
    round (torch-fidelity reads its first input as the generated set) the two numbers trade places."""
    state, real = domain
    noise = np.random.default_rng(4).normal(0, 0.02, (60, *real.shape[1:])).astype(real.dtype)
    collapsed = np.clip(np.repeat(real[:3], 20, axis=0) + noise, -1, 1)
    f_real = fd.features(real, fd.DOMAIN, domain_state=state)
    f_collapsed = fd.features(collapsed, fd.DOMAIN, domain_state=state)
    m = fd.fidelity_metrics(f_collapsed, f_real, kid_subsets=5)
    assert m[fd.PRECISION] > 0.8 and m[fd.RECALL] < 0.3, m
    assert m[fd.N_SYNTHETIC] == 60 and m[fd.N_REAL] == 64


def test_relative_fid_is_about_one_for_a_perfect_generator():
    rng = np.random.default_rng(0)
    good = fd.relative_fid(gauss(2000, seed=3), gauss(2000, seed=4), rng)
    bad = fd.relative_fid(gauss(2000, shift=0.5, seed=3), gauss(2000, seed=4), rng)
    assert 0.7 < good["relative_fid"] < 1.4 and bad["relative_fid"] > 3
    assert good["n_half"] == 1000 and good["n_synthetic_used"] == 1000


def test_memorisation_audit_flags_copies_not_fresh_samples():
    train, held = gauss(500, seed=1), gauss(300, seed=2)
    copies = train[:200] + 1e-4
    fresh = gauss(200, seed=3)
    m_copy = fd.memorisation_audit(copies, train, held)
    m_fresh = fd.memorisation_audit(fresh, train, held)
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
    a, b = fd.patient_halves(groups, np.random.default_rng(1))
    assert len(a) == len(b) > len(groups) / 4 and not set(groups[a]) & set(groups[b])
    train, held = gauss(300, seed=1), gauss(len(groups), seed=2)
    m = fd.memorisation_audit(gauss(100, seed=3), train, held, halves=(a, b))
    assert m["n_heldout_threshold"] == m["n_heldout_measured"] == len(a)
    one = fd.memorisation_audit(gauss(100, seed=3), train, held,
                                halves=fd.patient_halves(np.zeros(len(groups), int), np.random.default_rng(1)))
    assert not one["heldout_split"] and one["n_heldout_measured"] == len(groups)   # one patient: no halves


def test_fid_few_is_fid_where_rows_are_fewer_than_features():
    """The n x n route relative FID takes below the feature dimension gives torch-fidelity's number (it takes
    the D x D matrix's eigenvalues), at equal and unequal sizes, for identical and for shifted sets."""
    a, b = gauss(40, d=64, seed=1), gauss(30, d=64, shift=0.2, seed=2) * 1.3
    assert fd.fid_few(a, b) == pytest.approx(fd.fid(a, b), rel=1e-6)
    assert abs(fd.fid_few(a, a)) < 1e-9
    assert fd.fid_few(gauss(300, d=16, seed=1), gauss(300, d=16, seed=2)) == pytest.approx(
        fd.fid(gauss(300, d=16, seed=1), gauss(300, d=16, seed=2)), rel=1e-6)   # more rows than features: too


def test_relative_fid_is_a_median_over_draws_with_their_range():
    """One draw of the halves moves relative FID a lot at small n: the figure is the median over draws, each
    draw the one relative_fid gives with the i-th spawned generator, with the draws' 2.5th-97.5th range."""
    syn, real = gauss(150, shift=0.15, seed=3), gauss(160, seed=4)
    summary, runs = fd.relative_fid_draws(syn, real, np.random.default_rng(5), 9)
    one = [fd.relative_fid(syn, real, g)["relative_fid"] for g in np.random.default_rng(5).spawn(9)]
    assert [r["relative_fid"] for r in runs] == one and len(set(one)) == 9
    assert summary["relative_fid"] == np.median(one) and summary["relative_fid_draws"] == 9
    low, high = summary["relative_fid_range"]
    assert min(one) < low < summary["relative_fid"] < high < max(one)
    assert summary["fid_real_halves"] == np.median([r["fid_real_halves"] for r in runs])
    assert summary["n_half"] == 80
    again, _ = fd.relative_fid_draws(syn, real, np.random.default_rng(5), 9)
    assert again == summary                                            # seeded: the same figure every run
    with pytest.raises(ValueError, match="at least one draw"):
        fd.relative_fid_draws(syn, real, np.random.default_rng(5), 0)
    same = np.repeat(gauss(1, seed=6), 40, axis=0)   # every real image alike: the halves' FID is 0, no ratio
    undefined, _ = fd.relative_fid_draws(syn, same, np.random.default_rng(5), 3)
    assert undefined["relative_fid"] is None and undefined["relative_fid_range"] is None
    assert undefined["note"] == "relative FID undefined in 3 of 3 draws (real halves' FID 0)"


def test_precision_recall_at_equal_sizes_and_their_real_scale():
    """Precision/recall's k-NN radii shrink with n: they are taken at equal sizes, and beside relative FID at
    the half size, with the same two numbers for two real halves (their value for a perfect generator)."""
    m = fd.fidelity_metrics(gauss(4000, seed=1), gauss(200, seed=2), kid_subsets=5)
    assert m["n_precision_recall"] == 200 and m[fd.N_SYNTHETIC] == 4000
    r = fd.relative_fid(gauss(2000, seed=3), gauss(2000, seed=4), np.random.default_rng(0))
    assert abs(r["precision_vs_half"] - r["precision_real_halves"]) < 0.05
    assert abs(r["recall_vs_half"] - r["recall_real_halves"]) < 0.05
    short = fd.relative_fid(gauss(300, seed=3), gauss(2000, seed=4), np.random.default_rng(0))
    assert short["n_half"] == short["n_synthetic_used"] == 300   # the halves cut to the synthetic count


def test_missing_inception_weights_are_reported_not_crashed(tmp_path):
    with pytest.raises(fd.ExtractorUnavailable, match="inception"):
        fd.features(np.zeros((2, 1, 32, 32), np.float32), fd.INCEPTION,
                    feature_extractor_weights_path=str(tmp_path / "missing.pth"))
