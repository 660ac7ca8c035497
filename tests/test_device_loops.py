"""The domain extractor's and the downstream CNN's loops keep their data and draws on the device (no host
copies or syncs per step on a GPU); on a CPU they give what the host loops gave, and bf16 autocast (the GAN's
precision object) runs and stays close to fp32."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evaluation.downstream import CNNClassifier
from evaluation.features import DomainNet, ExtractorConfig, extract, roll2d, rotate_quarters, train_extractor


def tiny(n=48, res=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, res, res, generator=g) * 2 - 1
    y = torch.arange(n) % 2
    x[y == 1, :, : res // 2] = -1
    return x.numpy().astype(np.float16), y.numpy()


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
    x, y = tiny()
    cfg = ExtractorConfig(resolution=32, width=8, dim=32)
    ref = host_loop_extractor(x, y, cfg, steps=25, batch=16, lr=2e-3, seed=5)
    net = train_extractor(x, y, cfg, steps=25, batch=16, seed=5)
    for (k, a), b in zip(ref.state_dict().items(), net.state_dict().values()):
        assert torch.equal(a, b), k


def test_extract_sends_the_array_once_and_keeps_values(tmp_path):
    x, y = tiny(40)
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
    x, y = tiny()
    cfg = ExtractorConfig(resolution=32, width=8, dim=32)
    net = train_extractor(x, y, cfg, steps=10, batch=16, seed=2, precision="bf16")
    assert {p.dtype for p in net.parameters()} == {torch.float32}
    f32, bf = extract(net, x), extract(net, x, precision="bf16")
    assert np.isfinite(bf).all()
    cos = (f32 * bf).sum(1) / np.linalg.norm(f32, axis=1) / np.linalg.norm(bf, axis=1)
    assert cos.min() > 0.99 and not np.array_equal(f32, bf)      # bf16 did run, and agrees


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cnn_trains_under_each_precision(precision):
    x, y = tiny(48)
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
