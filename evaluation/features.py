"""A domain feature extractor for radiographs that works offline: a small CNN trained on the real training
split only, to classify the image's label and, as a self-supervised auxiliary task, which of four
rotations was applied (Gidaris et al. 2018). The rotation task makes the features describe anatomy and
layout (lung fields, mediastinum, diaphragm, borders) and not only what separates the classes, which a
two-class objective alone would collapse to. Features: the global-average-pooled last block (``dim``).

On a GPU the images go to the device once, batches and augmentations are drawn there, and nothing in a
training step waits for the host; ``precision="bf16"`` runs the forward passes under the same autocast
as the GAN (common/precision.py). On a CPU the draws and results are those of a host loop.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.precision import autocast


@dataclass(frozen=True)
class ExtractorConfig:
    resolution: int = 64
    num_classes: int = 2
    width: int = 32          # channels of the first block; doubled per block
    dim: int = 256           # feature dimension

    def to_dict(self) -> dict:
        return asdict(self)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))


class DomainNet(nn.Module):
    def __init__(self, cfg: ExtractorConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        blocks, cin, size = [], 1, cfg.resolution
        while size > 4 and len(blocks) < 4:            # 64x64: 4 blocks, 64 -> 32 -> 16 -> 8 -> 4
            blocks += [_block(cin, w), nn.MaxPool2d(2)]
            cin, w, size = w, w * 2, size // 2
        self.body = nn.Sequential(*blocks, nn.Conv2d(cin, cfg.dim, 1), nn.BatchNorm2d(cfg.dim), nn.ReLU(True))
        self.classify = nn.Linear(cfg.dim, max(cfg.num_classes, 1))
        self.rotation = nn.Linear(cfg.dim, 4)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, R, R) in [-1, 1] -> (B, dim)."""
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.classify(f), self.rotation(f)


def extractor_state(net: DomainNet, **extra) -> dict:
    """The domain extractor as a self-describing dict (for torch.save and ``domain_state=``)."""
    return {"format": 1, "config": net.cfg.to_dict(), "state_dict": net.state_dict(), **extra}


def domain_net_from_state(state: dict) -> DomainNet:
    """The network ``extractor_state`` saved, in eval mode."""
    if state.get("format") != 1:
        raise ValueError(f"unknown domain extractor format {state.get('format')}")
    net = DomainNet(ExtractorConfig(**state["config"]))
    net.load_state_dict(state["state_dict"])
    return net.eval()


def check_images(x, resolution: int | None = None) -> None:
    shape = tuple(x.shape)
    if len(shape) != 4 or shape[1] != 1 or (resolution and shape[-2:] != (resolution, resolution)):
        want = f"(N,1,{resolution},{resolution})" if resolution else "(N,1,H,W)"
        raise ValueError(f"expected a {want} array in [-1,1], got {shape}")


def on_device(images, device: torch.device) -> torch.Tensor:
    """The whole (N,1,H,W) array on ``device``, once, in its own float dtype (float16 stays float16)."""
    x = np.asarray(images)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    return torch.from_numpy(np.array(x, copy=not x.flags.writeable)).to(device)


def train_extractor(images: np.ndarray, labels: np.ndarray, cfg: ExtractorConfig, steps: int = 2000,
                    batch: int = 128, lr: float = 2e-3, seed: int = 0, device: str | torch.device = "cpu",
                    on_log=None, precision: str = "fp32") -> DomainNet:
    """Train on (images, labels) only: label + rotation losses, random shifts of up to 1/16 of the side."""
    check_images(images, cfg.resolution)
    device = torch.device(device)
    x_all = torch.as_tensor(np.asarray(images), dtype=torch.float16).to(device)
    y_all = torch.as_tensor(np.asarray(labels), dtype=torch.long).to(device)
    gen = torch.Generator(device).manual_seed(seed)   # every draw on the device: no host copy, no sync
    amp = autocast(device, precision)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = DomainNet(cfg).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    shift = max(1, cfg.resolution // 16)
    net.train()
    for step in range(steps):
        idx = torch.randint(0, len(x_all), (batch,), generator=gen, device=device)
        x = x_all[idx].float()
        dyx = torch.randint(-shift, shift + 1, (2,), generator=gen, device=device)
        x = roll2d(x, dyx)
        rot = torch.randint(0, 4, (batch,), generator=gen, device=device)
        x = rotate_quarters(x, rot)
        with amp:
            cls, rlog = net(x)
        loss = F.cross_entropy(rlog.float(), rot)
        if cfg.num_classes > 1:  # the label is about the upright image: the mean over rot == 0, if any
            keep = (rot == 0).float()
            ce = F.cross_entropy(cls.float(), y_all[idx], reduction="none")
            loss = loss + (ce * keep).sum() / keep.sum().clamp(min=1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if on_log and (step + 1) % 100 == 0:
            on_log(step + 1, float(loss))
    return net.eval()


def roll2d(x: torch.Tensor, dyx: torch.Tensor) -> torch.Tensor:
    """``torch.roll(x, (dy, dx), (2, 3))`` with the shifts as a device tensor (no host sync to read them)."""
    h, w = x.shape[-2:]
    rows = (torch.arange(h, device=x.device) - dyx[0]) % h
    cols = (torch.arange(w, device=x.device) - dyx[1]) % w
    return x.index_select(2, rows).index_select(3, cols)


def rotate_quarters(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rotate each square image by k[i] quarter turns (selects among the four rotations: no boolean-mask
    indexing, so no host sync)."""
    k = k.view(-1, 1, 1, 1)
    out = x
    for q in (1, 2, 3):
        out = torch.where(k == q, torch.rot90(x, q, (2, 3)), out)
    return out


@torch.no_grad()
def extract(net: DomainNet, images, batch: int = 512, precision: str = "fp32") -> np.ndarray:
    """(N, 1, R, R) images in [-1, 1] (array or tensor) -> (N, dim) float64 features.
    The images go to the net's device once; the features come back once."""
    check_images(images, net.cfg.resolution)
    device = next(net.parameters()).device
    net.eval()
    x_all = images.to(device) if torch.is_tensor(images) else on_device(images, device)
    out = []
    with autocast(device, precision):
        for i in range(0, len(x_all), batch):
            out.append(net.features(x_all[i:i + batch].float()).float())
    return torch.cat(out).double().cpu().numpy()
