"""DCGAN networks (Radford et al. 2015, arXiv:1511.06434), single channel, optionally class-conditional.

Generator: z (and a class embedding) -> fractionally-strided convolutions with BatchNorm and ReLU -> Tanh.
Discriminator: strided convolutions with LeakyReLU(0.2), BatchNorm on every layer but the first, no pooling,
no hidden fully-connected layer. The number of blocks follows from the resolution: 4x4 up (or down) to
``resolution`` in factors of two, channel widths 64 * width * 2^k as in the paper's 64x64 model.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils import spectral_norm as _sn


@dataclass(frozen=True)
class GanConfig:
    resolution: int = 64          # output side; a power of two >= 16
    z_dim: int = 100
    width: float = 1.0            # multiplier on DCGAN's 64 base channels (ngf = ndf = 64 * width)
    num_classes: int = 0          # 0: unconditional
    embed_dim: int = 50           # class embedding joined to z (conditional only)
    spectral_norm: bool = False   # spectral normalisation of every D weight, replacing D's BatchNorm
    channels: int = 1

    def __post_init__(self):
        r = self.resolution
        if r < 16 or r & (r - 1):
            raise ValueError(f"resolution must be a power of two >= 16, got {r}")
        if self.num_classes < 0 or self.z_dim < 1 or self.width <= 0:
            raise ValueError(f"invalid GAN config {self}")

    @property
    def blocks(self) -> int:
        """Stride-2 layers between 4x4 and the resolution (4 at 64x64, as in the paper)."""
        return int(math.log2(self.resolution)) - 2

    @property
    def base(self) -> int:
        return max(8, int(round(64 * self.width)))

    @property
    def g_embed_dim(self) -> int:
        return self.embed_dim if self.num_classes else 0

    def to_dict(self) -> dict:
        return asdict(self)


def init_dcgan_weights(m: nn.Module) -> None:
    """N(0, 0.02) for convolutions and embeddings, N(1, 0.02) / 0 for BatchNorm, as in the paper."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Embedding, nn.Linear)):
        w = getattr(m, "weight_orig", m.weight)  # spectral norm keeps the raw weight here
        nn.init.normal_(w, 0.0, 0.02)
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class Generator(nn.Module):
    def __init__(self, cfg: GanConfig):
        super().__init__()
        self.cfg = cfg
        n, c = cfg.blocks, cfg.base
        self.embed = nn.Embedding(cfg.num_classes, cfg.g_embed_dim) if cfg.num_classes else None
        ch = [c * 2 ** (n - 1 - i) for i in range(n)]  # 64x64: [512, 256, 128, 64]
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(cfg.z_dim + cfg.g_embed_dim, ch[0], 4, 1, 0, bias=False),  # (B, 8c, 4, 4)
            nn.BatchNorm2d(ch[0]), nn.ReLU(True)]
        for cin, cout in zip(ch[:-1], ch[1:]):                                        # doubles H and W
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ch[-1], cfg.channels, 4, 2, 1, bias=False), nn.Tanh()]  # (B, 1, R, R)
        self.net = nn.Sequential(*layers)
        self.apply(init_dcgan_weights)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if y is None:
                raise ValueError("a conditional generator needs class labels y")
            z = torch.cat([z, self.embed(y)], dim=1)                 # embedding joined to z
        return self.net(z[:, :, None, None])

    @torch.no_grad()
    def sample(self, n: int, label: int | torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images in [-1,1], of class ``label`` (an int, or one label per image) when conditional."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.cfg.z_dim, generator=generator, device=generator.device if generator else device)
        z = z.to(device)  # a CPU generator gives the same latents on any device
        y = None
        if self.cfg.num_classes:
            if label is None:
                raise ValueError(f"a conditional generator needs a label in 0..{self.cfg.num_classes - 1}")
            y = torch.as_tensor(label, device=device, dtype=torch.long).expand(n).contiguous()
        return self(z, y)


class Discriminator(nn.Module):
    """Conditioning by projection (Miyato & Koyama 2018, "cGANs with projection discriminator", ICLR):
    logit = w . phi(x) + <embed(y), pool(phi(x))>. Chosen over label maps as extra input channels because
    the projection follows from the form of the optimal D for a conditional likelihood ratio and beat
    input concatenation on fidelity and class accuracy in that paper; it also keeps D's convolutions
    identical to the unconditional DCGAN (one input channel, the same first layer), so the two modes
    differ only by one embedding, and it adds no parameters that grow with the resolution.
    """

    def __init__(self, cfg: GanConfig):
        super().__init__()
        self.cfg = cfg
        n, c = cfg.blocks, cfg.base
        sn = _sn if cfg.spectral_norm else (lambda m: m)
        # With spectral norm, D drops BatchNorm, as SN-DCGAN does (Miyato et al. 2018): SN alone bounds D's
        # Lipschitz constant, and BN's batch statistics would undo the bound.
        norm = (lambda ch: nn.Identity()) if cfg.spectral_norm else nn.BatchNorm2d
        ch = [c * 2 ** i for i in range(n)]  # 64x64: [64, 128, 256, 512]
        layers: list[nn.Module] = [sn(nn.Conv2d(cfg.channels, ch[0], 4, 2, 1, bias=False)),
                                   nn.LeakyReLU(0.2, True)]                     # (B, c, R/2, R/2), no BN
        for cin, cout in zip(ch[:-1], ch[1:]):                                  # halves H and W
            layers += [sn(nn.Conv2d(cin, cout, 4, 2, 1, bias=False)), norm(cout), nn.LeakyReLU(0.2, True)]
        self.features = nn.Sequential(*layers)                                  # (B, 8c, 4, 4)
        self.out = sn(nn.Conv2d(ch[-1], 1, 4, 1, 0, bias=False))                # (B, 1, 1, 1)
        self.embed = sn(nn.Embedding(cfg.num_classes, ch[-1])) if cfg.num_classes else None
        self.apply(init_dcgan_weights)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B,) — no sigmoid; the losses take logits."""
        h = self.features(x)
        logit = self.out(h).flatten()
        if self.embed is not None:
            if y is None:
                raise ValueError("a conditional discriminator needs class labels y")
            logit = logit + (self.embed(y) * h.sum(dim=(2, 3))).sum(dim=1)      # projection term
        return logit


def latents(seeds, z_dim: int) -> torch.Tensor:
    """One latent per integer seed, (len(seeds), z_dim): any image can be regenerated from its seed alone."""
    return torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


@torch.no_grad()
def generate(g: Generator, z: torch.Tensor, y=None, batch: int = 500) -> torch.Tensor:
    """Images for latents ``z`` (N, z_dim) and labels ``y`` (N,; ignored when unconditional), in batches on
    g's device; returns (N, 1, R, R) float32 on the CPU."""
    device = next(g.parameters()).device
    out = []
    for i in range(0, len(z), batch):
        yb = torch.as_tensor(y[i:i + batch], device=device, dtype=torch.long) if g.cfg.num_classes else None
        out.append(g(torch.as_tensor(z[i:i + batch]).to(device), yb).float().cpu())
    return torch.cat(out)


def build(cfg: GanConfig) -> tuple[Generator, Discriminator]:
    return Generator(cfg), Discriminator(cfg)


# The generator file (models/gan/generator.pt): what sampling needs, nothing of the training loop. Read with
# torch.load(..., weights_only=True); dcgan.train.generator_state fills it from a trainer.
GENERATOR_FORMAT = 1


def generator_state(g: Generator, classes: list[str], *, seed: int, step: int, ema: bool,
                    fixed_z: torch.Tensor | None = None, fixed_y: torch.Tensor | None = None) -> dict:
    """``g``'s config and weights with the class names, and where they came from (seed, step, EMA, the fixed
    latents of the sample grids). The weights are CPU copies: torch.save records each tensor's device, and a
    generator kept while training on a GPU must give the file one restored from a checkpoint gives."""
    weights = {k: v.detach().cpu().clone() for k, v in g.state_dict().items()}
    return {"format": GENERATOR_FORMAT, "gan_config": g.cfg.to_dict(), "state_dict": weights,
            "classes": list(classes), "seed": seed, "step": step, "ema": ema, "fixed_z": fixed_z, "fixed_y": fixed_y}


def load_generator(state: dict, device: torch.device | str = "cpu") -> Generator:
    """A Generator in eval mode from ``generator_state``'s dict."""
    if state.get("format") != GENERATOR_FORMAT:
        raise ValueError(f"generator format {state.get('format')} is not {GENERATOR_FORMAT}")
    g = Generator(GanConfig(**state["gan_config"]))
    g.load_state_dict(state["state_dict"])
    return g.to(device).eval()
