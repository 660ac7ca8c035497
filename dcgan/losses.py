"""GAN objectives on discriminator logits. Non-saturating BCE (Goodfellow et al. 2014, the DCGAN default)
with optional one-sided label smoothing (Salimans et al. 2016), or hinge (Lim & Ye 2017; Miyato et al. 2018)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("bce", "hinge")


def d_loss(real: torch.Tensor, fake: torch.Tensor, kind: str = "bce", smoothing: float = 0.0) -> torch.Tensor:
    """D step. bce: minimise -[t log D(x) + (1-t) log(1-D(x))] - log(1 - D(G(z))), t = 1 - smoothing
    (one-sided: fake targets stay 0). hinge: E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]."""
    real, fake = real.float(), fake.float()
    if kind == "bce":
        t = 1.0 - smoothing
        return (t * F.softplus(-real) + (1 - t) * F.softplus(real)).mean() + F.softplus(fake).mean()
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")


def g_loss(fake: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """G step. bce: non-saturating, minimise -log D(G(z)). hinge: minimise -D(G(z))."""
    fake = fake.float()
    if kind == "bce":
        return F.softplus(-fake).mean()
    if kind == "hinge":
        return -fake.mean()
    raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")
