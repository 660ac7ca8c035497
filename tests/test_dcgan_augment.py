"""DiffAugment (dcgan/augment.py): translation, cutout, differentiability and the policy check."""
import pytest
import torch

from conftest import cpu_gen
from dcgan.augment import cutout, diff_augment, parse_policy, translate


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


def test_diffaugment_is_differentiable_and_policy_checked():
    x = torch.rand(4, 1, 16, 16, requires_grad=True)
    diff_augment(x, parse_policy("translation,cutout"), cpu_gen()).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="policy"):
        parse_policy("color,flip")
