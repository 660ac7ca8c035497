"""Differentiable augmentation (DiffAugment, Zhao et al. 2020, arXiv:2006.10738): the same random
translation, cutout and colour changes applied to every image D sees, real and fake, in both the D and the
G step, so D cannot memorise a small training set and G still gets gradients through the augmentation.

Follows the reference implementation (mit-han-lab/data-efficient-gans, DiffAugment_pytorch.py): shifts of
up to 1/8 of the side filled with 0; one square of half the side set to 0; colour: brightness (+U(-0.5, 0.5)
on the [-1, 1] scale), saturation (the channels scaled about their mean by U(0, 2): no change to a single-channel
X-ray) and contrast (scaled about the image mean by U(0.5, 1.5)), one draw per image each. Written with
gathers and comparisons on the device, no host synchronisation, so it can be captured in a CUDA graph.
"""
from __future__ import annotations

import torch


def parse_policy(policy: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    bad = [p for p in names if p not in AUGMENTS]
    if bad:
        raise ValueError(f"unknown DiffAugment policy {bad}; choose from {tuple(AUGMENTS)} (comma-separated, or "
                         f"empty)")
    return names


def translate(x: torch.Tensor, ratio: float = 0.125, generator: torch.Generator | None = None) -> torch.Tensor:
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (b, 1), device=x.device, generator=generator)
    tx = torch.randint(-sw, sw + 1, (b, 1), device=x.device, generator=generator)
    rows = torch.arange(h, device=x.device) - ty                              # (B, H) source row
    cols = torch.arange(w, device=x.device) - tx                              # (B, W) source column
    keep = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]  # (B, H, W)
    rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    c = x.shape[1]
    out = x.gather(2, rows[:, None, :, None].expand(b, c, h, w))
    out = out.gather(3, cols[:, None, None, :].expand(b, c, h, w))
    return out * keep[:, None].to(x.dtype)


def cutout(x: torch.Tensor, ratio: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (b, 1), device=x.device, generator=generator)  # square centres
    cx = torch.randint(0, w + (1 - cw % 2), (b, 1), device=x.device, generator=generator)
    ry = torch.arange(h, device=x.device) - cy + ch // 2                      # (B, H), inside when in [0, ch)
    rx = torch.arange(w, device=x.device) - cx + cw // 2
    inside = ((ry >= 0) & (ry < ch))[:, :, None] & ((rx >= 0) & (rx < cw))[:, None, :]
    return x * (~inside)[:, None].to(x.dtype)


def color(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Brightness, saturation and contrast, in the reference's order, each drawn per image."""
    def draw() -> torch.Tensor:
        return torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device, generator=generator)

    x = x + (draw() - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (draw() * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (draw() + 0.5) + mean


AUGMENTS = {"translation": translate, "cutout": cutout, "color": color}   # the policies, by name


def diff_augment(x: torch.Tensor, policy: tuple[str, ...], generator: torch.Generator | None = None) -> torch.Tensor:
    for name in policy:
        x = AUGMENTS[name](x, generator=generator)
    return x
