"""The domain feature extractor (evaluation/features.py): shapes, batch independence, and that training makes
features that separate what the labels separate."""
import numpy as np
import pytest
import torch

from evaluation.features import DomainNet, ExtractorConfig, extract, train_extractor


@pytest.mark.parametrize("res", [32, 64])
def test_extractor_shapes_and_batch_independence(res):
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
    again = train_extractor(x, y, cfg, steps=30, batch=16, seed=1)   # the seed fixes the weights
    np.testing.assert_array_equal(extract(again, x, batch=7), f)


def disc_phantoms(n: int, res: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(n, 1, res, res) images in [-1, 1]: a bright disc on a dark noisy field, above the middle for label 1
    and below it for label 0, at a random column and radius. Both classes hold the same disc and the same
    intensities, so global image statistics (and an untrained network's pooled features) barely tell them
    apart: separating them takes features that learned where the disc is."""
    rows, cols = np.mgrid[:res, :res]
    labels = np.arange(n) % 2
    images = rng.normal(-0.6, 0.1, (n, 1, res, res))
    for image, label in zip(images, labels):
        centre_row = rng.uniform(0.15, 0.3) * res if label else rng.uniform(0.7, 0.85) * res
        centre_col, radius = rng.uniform(0.3, 0.7) * res, rng.uniform(0.1, 0.15) * res
        image[0][(rows - centre_row) ** 2 + (cols - centre_col) ** 2 < radius ** 2] = 0.8
    return np.clip(images, -1, 1).astype(np.float32), labels


def nearest_centroid_accuracy(f_train, y_train, f_test, y_test) -> float:
    centroids = np.stack([f_train[y_train == k].mean(0) for k in (0, 1)])
    predicted = ((f_test[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    return float((predicted == y_test).mean())


def test_trained_features_separate_held_out_classes_that_untrained_ones_do_not():
    images, labels = disc_phantoms(160, 32, np.random.default_rng(0))
    train, held = slice(0, 96), slice(96, None)
    cfg = ExtractorConfig(resolution=32, num_classes=2, width=8, dim=32)
    net = train_extractor(images[train], labels[train], cfg, steps=40, batch=32, seed=0)
    trained = nearest_centroid_accuracy(extract(net, images[train]), labels[train],
                                        extract(net, images[held]), labels[held])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        untrained_net = DomainNet(cfg).eval()
    untrained = nearest_centroid_accuracy(extract(untrained_net, images[train]), labels[train],
                                          extract(untrained_net, images[held]), labels[held])
    assert trained >= 0.95, trained
    assert untrained < 0.9, untrained   # the task needs training: the check above measures what it learned
