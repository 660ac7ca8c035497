"""DiffAugment (dcgan/augment.py): translation, cutout, colour, differentiability and the policy check."""
import pytest
import torch

from conftest import cpu_gen
from dcgan.augment import color, cutout, diff_augment, parse_policy, translate


def test_translation_shifts_content_and_fills_zero():
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(64, 1, 1, 1) + 1
    out = translate(x, ratio=0.25, generator=cpu_gen())
    assert out.shape == x.shape
    for img in out[:, 0]:
        nz = img.nonzero()
        (r0, c0), (r1, c1) = nz.min(0).values.tolist(), nz.max(0).values.tolist()
        block = img[r0:r1 + 1, c0:c1 + 1]
        assert (block != 0).all()  # a shifted copy: a rectangle of source values, zeros around
        diffs = block - x[0, 0, :block.shape[0], :block.shape[1]]
        assert torch.unique(diffs).numel() == 1  # same layout, shifted
    assert len({tuple(o.flatten().tolist()) for o in out}) > 3  # shifts vary per image


def test_cutout_zeroes_one_square_per_image():
    x = torch.ones(32, 1, 16, 16)
    out = cutout(x, ratio=0.5, generator=cpu_gen())
    zeros = (out == 0).flatten(1).sum(1)
    assert (zeros > 0).all() and (zeros <= 64).all()  # an 8x8 square, clipped at the border
    assert (zeros == 64).sum() > 0


def test_color_is_one_brightness_and_contrast_draw_per_image():
    """On one channel, colour is out = c * (x - mean(x)) + mean(x) + b per image, with contrast c in [0.5, 1.5]
    and brightness b in [-0.5, 0.5] (saturation leaves a single channel as it is); on three channels, saturation
    also scales the channels about their mean."""
    inputs = cpu_gen(7)
    x = torch.rand(64, 1, 8, 8, generator=inputs) * 2 - 1
    out = color(x, generator=cpu_gen())
    centred_in = x - x.mean(dim=(1, 2, 3), keepdim=True)
    centred_out = out - out.mean(dim=(1, 2, 3), keepdim=True)
    c = (centred_out.flatten(1) / centred_in.flatten(1)).median(1).values
    b = (out - x).mean(dim=(1, 2, 3))
    assert torch.allclose(centred_out, c[:, None, None, None] * centred_in, atol=1e-5)
    assert ((c >= 0.5 - 1e-5) & (c <= 1.5 + 1e-5)).all() and ((b >= -0.5 - 1e-5) & (b <= 0.5 + 1e-5)).all()
    assert c.std() > 0.1 and b.std() > 0.1   # drawn per image
    grey = x.repeat(1, 3, 1, 1)
    out = color(grey, generator=cpu_gen())
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])   # grey stays grey
    rgb = torch.rand(64, 3, 8, 8, generator=inputs)
    out = color(rgb, generator=cpu_gen())
    # one factor per image scales every pixel's channel difference: saturation x contrast. Fitted by least squares,
    # not as a ratio per pixel (a ratio of two near-equal channels is all rounding: CI once failed on it)
    d_in, d_out = (rgb[:, 0] - rgb[:, 1]).flatten(1), (out[:, 0] - out[:, 1]).flatten(1)
    k = (d_out * d_in).sum(1) / (d_in * d_in).sum(1)
    assert torch.allclose(d_out, k[:, None] * d_in, atol=1e-5) and (k >= 0).all() and (k <= 3).all()
    assert ((k < 0.5) | (k > 1.5)).any()   # beyond what contrast alone gives: saturation acts


def test_diffaugment_is_differentiable_and_policy_checked():
    x = torch.rand(4, 1, 16, 16, requires_grad=True)
    diff_augment(x, parse_policy("color,translation,cutout"), cpu_gen()).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="policy"):
        parse_policy("color,flip")
