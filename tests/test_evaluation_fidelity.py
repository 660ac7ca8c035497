"""The feature extractors and FID (evaluation/fidelity.py), and features to metrics end to end."""
import numpy as np
import pytest
import torch

from conftest import gauss
from evaluation import fidelity as fd
from evaluation import fidelity_stats as fs
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
    m = fs.fidelity_metrics(f_collapsed, f_real, kid_subsets=5)
    assert m[fs.PRECISION] > 0.8 and m[fs.RECALL] < 0.3, m
    assert m[fs.N_SYNTHETIC] == 60 and m[fs.N_REAL] == 64


def test_missing_inception_weights_are_reported_not_crashed(tmp_path):
    with pytest.raises(fd.ExtractorUnavailable, match="inception"):
        fd.features(np.zeros((2, 1, 32, 32), np.float32), fd.INCEPTION,
                    feature_extractor_weights_path=str(tmp_path / "missing.pth"))
