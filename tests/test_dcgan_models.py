"""DCGAN networks (dcgan/models.py): shapes per resolution, the paper's widths and init, conditioning,
spectral norm."""
import math

import pytest
import torch

from common.io import save_torch
from conftest import cpu_gen
from dcgan.models import Discriminator, GanConfig, Generator, build, generator_state


@pytest.mark.parametrize("res", [16, 32, 64, 128])
@pytest.mark.parametrize("classes", [0, 3])
def test_shapes_per_resolution(res, classes):
    cfg = GanConfig(resolution=res, width=0.125, num_classes=classes)
    G, D = build(cfg)
    z = torch.randn(5, cfg.z_dim, generator=cpu_gen())
    y = torch.tensor([0, 1, 2, 0, 1]) if classes else None
    with torch.no_grad():
        x = G(z, y)
    assert x.shape == (5, 1, res, res)
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    assert D(x, y).shape == (5,)
    # one stride-2 block per factor of two between 4x4 and the resolution, as in DCGAN (4 at 64x64)
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in G.modules()) == int(math.log2(res)) - 1
    assert not any(isinstance(m, (torch.nn.Linear, torch.nn.MaxPool2d, torch.nn.AvgPool2d)) for m in D.modules())
    assert not isinstance(D.features[1], torch.nn.BatchNorm2d)  # no BN on D's first layer


def test_paper_widths_at_64():
    G, D = build(GanConfig(resolution=64))
    convs = [m for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [m.out_channels for m in convs] == [512, 256, 128, 64, 1]
    assert [m.out_channels for m in D.modules() if isinstance(m, torch.nn.Conv2d)] == [64, 128, 256, 512, 1]
    w = torch.cat([m.weight.flatten() for m in convs])
    w = w.detach()
    assert abs(float(w.std()) - 0.02) < 0.002 and abs(float(w.mean())) < 0.001  # N(0, 0.02)


@pytest.mark.parametrize("bad", [8, 48, 100])
def test_resolution_must_be_power_of_two(bad):
    with pytest.raises(ValueError, match="power of two"):
        GanConfig(resolution=bad)


def test_conditional_discriminator_depends_on_label():
    """Every image's logit moves with its label (the projection term <embed(y), h>). Seeded weights: with an
    unseeded draw the two embeddings' difference was, once in a full run here, all but orthogonal to one image's
    features (a logit difference of 1e-7)."""
    cfg = GanConfig(resolution=32, width=0.25, num_classes=2)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        D = Discriminator(cfg).eval()
    x = torch.rand(4, 1, 32, 32, generator=cpu_gen()) * 2 - 1
    zero, one = D(x, torch.zeros(4, dtype=torch.long)), D(x, torch.ones(4, dtype=torch.long))
    assert (zero - one).abs().min() > 1e-6
    with pytest.raises(ValueError, match="labels"):
        D(x)
    uncond = Discriminator(GanConfig(resolution=32, width=0.25)).eval()
    assert uncond.embed is None and uncond(x).shape == (4,)


def test_conditional_generator_sampling_one_class_is_one_call():
    G = Generator(GanConfig(resolution=32, width=0.25, num_classes=2)).eval()
    a = G.sample(6, label=1, generator=cpu_gen(5))
    b = G.sample(6, label=1, generator=cpu_gen(5))
    c = G.sample(6, label=0, generator=cpu_gen(5))
    assert a.shape == (6, 1, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="label"):
        G.sample(2)


def test_spectral_norm_replaces_d_batchnorm():
    D = Discriminator(GanConfig(resolution=32, width=0.25, spectral_norm=True, num_classes=2))
    convs = [m for m in D.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(hasattr(m, "weight_orig") for m in convs) and hasattr(D.embed, "weight_orig")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in D.modules())
    for _ in range(30):  # power iterations run in training-mode forwards
        D(torch.zeros(2, 1, 32, 32), torch.tensor([0, 1]))
    for m in convs:  # largest singular value of the normalised weight ~ 1
        w = m.weight.flatten(1)
        assert float(torch.linalg.matrix_norm(w, 2)) == pytest.approx(1.0, rel=0.2)


def test_the_generator_file_holds_cpu_copies_of_the_weights(tmp_path):
    """torch.save records each tensor's device, so generator.pt holds CPU copies: a best generator kept from a
    GPU run and one restored from a checkpoint (loaded onto the CPU) write the same bytes, and training on
    after a check does not change the generator it kept."""
    g = Generator(GanConfig(resolution=16, width=0.125, num_classes=2))
    state = generator_state(g, ["a", "b"], seed=0, step=3, ema=True)
    assert all(t.device.type == "cpu" for t in state["state_dict"].values())
    kept = {k: v.clone() for k, v in state["state_dict"].items()}
    with torch.no_grad():
        for p in g.parameters():
            p.add_(1)
        for b in g.buffers():
            b.add_(1)
    assert all(torch.equal(state["state_dict"][k], v) for k, v in kept.items())
    save_torch(tmp_path / "fresh.pt", state)
    save_torch(tmp_path / "restored.pt", torch.load(tmp_path / "fresh.pt", map_location="cpu", weights_only=True))
    assert (tmp_path / "fresh.pt").read_bytes() == (tmp_path / "restored.pt").read_bytes()
