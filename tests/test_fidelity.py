"""Fréchet distance and the domain feature extractor."""
import numpy as np
import pytest
import torch

from evaluation.features import DomainNet, ExtractorConfig, extract, train_extractor
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


@pytest.mark.parametrize("res", [32, 64])
def test_extractor_shapes_and_training(res):
    cfg = ExtractorConfig(resolution=res, num_classes=2, width=8, dim=32)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(40, 1, res, res, generator=g) * 2 - 1).numpy()
    y = np.arange(40) % 2
    x[y == 1, :, : res // 2] = -1
    net = train_extractor(x, y, cfg, steps=30, batch=16, seed=1)
    f = extract(net, x, batch=7)
    assert f.shape == (40, 32) and np.isfinite(f).all()
    np.testing.assert_allclose(extract(net, x, batch=40), f, rtol=1e-5, atol=1e-6)  # batch-independent (eval BN)
    with pytest.raises(ValueError, match=r"\(N,1,"):
        extract(net, x[:, 0])
    assert isinstance(net, DomainNet)
