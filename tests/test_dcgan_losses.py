"""The D and G objectives (dcgan/losses.py) against their definitions."""
import pytest
import torch

from dcgan.losses import d_loss, g_loss


def test_losses_match_their_definitions():
    real, fake = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([-3.0, 0.0, 1.0])
    s = torch.sigmoid
    bce = -(torch.log(s(real)).mean() + torch.log(1 - s(fake)).mean())
    assert float(d_loss(real, fake)) == pytest.approx(float(bce), rel=1e-6)
    smooth = -((0.9 * torch.log(s(real)) + 0.1 * torch.log(1 - s(real))).mean() + torch.log(1 - s(fake)).mean())
    assert float(d_loss(real, fake, smoothing=0.1)) == pytest.approx(float(smooth), rel=1e-6)
    assert float(g_loss(fake)) == pytest.approx(float(-torch.log(s(fake)).mean()), rel=1e-6)
    hinge = torch.relu(1 - real).mean() + torch.relu(1 + fake).mean()
    assert float(d_loss(real, fake, "hinge")) == pytest.approx(float(hinge))
    assert float(g_loss(fake, "hinge")) == pytest.approx(float(-fake.mean()))
    with pytest.raises(ValueError, match="loss"):
        d_loss(real, fake, "wgan")
