"""Fréchet distance (evaluation/fid.py): zero for a set with itself, the closed form for Gaussians, input checks."""
import numpy as np
import pytest

from evaluation.fid import feature_stats, fid, frechet_distance


def test_fid_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(500, 16))
    assert abs(fid(x, x)) < 1e-6


def test_fid_matches_the_closed_form_for_gaussians():
    # diagonal covariances: FID = |mu1 - mu2|^2 + sum (s1 + s2 - 2 sqrt(s1 s2))
    mu1, mu2 = np.zeros(3), np.array([1.0, 0.0, -2.0])
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 1.0])
    expected = 5.0 + (1 + 4 - 4) + (4 + 1 - 4) + (9 + 1 - 6)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_feature_stats_checks_its_input():
    with pytest.raises(ValueError, match=r"\(N>=2, D\)"):
        feature_stats(np.zeros(5))
