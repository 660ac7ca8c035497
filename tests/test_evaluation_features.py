"""The domain feature extractor (evaluation/features.py): shapes, batch independence, and that training makes
features that separate what the labels separate; its device loop (draws and data on the device) against the host
loop it replaced, and bf16."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import separable_float16

from evaluation.features import DomainNet, ExtractorConfig, extract, roll2d, rotate_quarters, train_extractor


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


# ---- the device loop: draws and data stay on the device; on a CPU it is the host loop it replaced ----------
def test_roll2d_is_torch_roll():
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for dy in range(-3, 4):
        for dx in (-2, 0, 5):
            assert torch.equal(roll2d(x, torch.tensor([dy, dx])), torch.roll(x, (dy, dx), (2, 3)))


def test_rotate_quarters_rotates_each_image():
    x = torch.randn(8, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    k = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    out = rotate_quarters(x, k)
    for i in range(8):
        assert torch.equal(out[i], torch.rot90(x[i], int(k[i]), (1, 2)))


def host_loop_extractor(images, labels, cfg, steps, batch, lr, seed):
    """The extractor's training loop as it was with host draws and boolean masks (the reference)."""
    x_all, y_all = torch.as_tensor(images, dtype=torch.float16), torch.as_tensor(labels, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = DomainNet(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    shift = max(1, cfg.resolution // 16)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x_all), (batch,), generator=gen)
        x = x_all[idx].float()
        dy, dx = torch.randint(-shift, shift + 1, (2,), generator=gen).tolist()
        x = torch.roll(x, (dy, dx), (2, 3))
        rot = torch.randint(0, 4, (batch,), generator=gen)
        out = x.clone()
        for q in (1, 2, 3):
            out[rot == q] = torch.rot90(x[rot == q], q, (2, 3))
        cls, rlog = net(out)
        keep = rot == 0
        loss = F.cross_entropy(rlog, rot)
        if keep.any() and cfg.num_classes > 1:
            loss = loss + F.cross_entropy(cls[keep], y_all[idx][keep])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


def test_extractor_on_a_cpu_is_the_host_loop():
    x, y = separable_float16()
    cfg = ExtractorConfig(resolution=32, width=8, dim=32)
    ref = host_loop_extractor(x, y, cfg, steps=25, batch=16, lr=2e-3, seed=5)
    net = train_extractor(x, y, cfg, steps=25, batch=16, seed=5)
    for (k, a), b in zip(ref.state_dict().items(), net.state_dict().values()):
        assert torch.equal(a, b), k


def test_extract_sends_the_array_once_and_keeps_values(tmp_path):
    x, y = separable_float16(40)
    net = train_extractor(x, y, ExtractorConfig(resolution=32, width=8, dim=32), steps=5, batch=16, seed=1)
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")   # read-only float16, as prepared images are
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f16 = extract(net, mm, batch=7)
    f32 = extract(net, torch.as_tensor(x.astype(np.float32)), batch=40)
    assert f16.dtype == np.float64 and f16.shape == (40, 32)
    np.testing.assert_allclose(f16, f32, rtol=1e-5, atol=1e-6)


def test_extractor_bf16_runs_and_stays_close_to_fp32():
    x, y = separable_float16()
    cfg = ExtractorConfig(resolution=32, width=8, dim=32)
    net = train_extractor(x, y, cfg, steps=10, batch=16, seed=2, precision="bf16")
    assert {p.dtype for p in net.parameters()} == {torch.float32}
    f32, bf = extract(net, x), extract(net, x, precision="bf16")
    assert np.isfinite(bf).all()
    cos = (f32 * bf).sum(1) / np.linalg.norm(f32, axis=1) / np.linalg.norm(bf, axis=1)
    assert cos.min() > 0.99 and not np.array_equal(f32, bf)      # bf16 did run, and agrees
