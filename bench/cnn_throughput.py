"""Downstream CNN training speed against the GAN trainer's, in arithmetic per second on the same cores:
one optimiser step of each network on a batch of 64x64 images, timed after warm-up, with its FLOPs counted
by torch's FlopCounterMode (forward + backward). The CNN is timed as it trained before (default memory layout,
classic augmentation by MONAI's array transforms image by image) and as it trains now (channels_last,
evaluation.downstream.classic_augment on the whole batch).

    python bench/cnn_throughput.py [--steps 10] [--batch 64] [--arch resnet10 --width 16] [--smoke]

Prints a table and writes <results>/cnn_throughput_cpu.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dcgan.models import GanConfig, build  # noqa: E402
from evaluation.downstream import _net, channels_last_is_safe, classic_augment  # noqa: E402
from _data import add_folder_args, folders  # noqa: E402  (bench/ is on sys.path)


def monai_augment(seed: int):
    """The classic augmentation as it was before: MONAI's array transforms, called image by image."""
    from monai.transforms import Compose, RandFlip, RandRotate, RandScaleIntensity, RandShiftIntensity

    t = Compose([RandFlip(prob=0.5, spatial_axis=1), RandRotate(range_x=np.deg2rad(10), prob=0.5, padding_mode="zeros"),
                 RandScaleIntensity(factors=0.1, prob=0.5), RandShiftIntensity(offsets=0.1, prob=0.5)])
    t.set_random_state(seed)
    return t


def timed(step, steps: int) -> float:
    """Seconds per step after 2 warm-up steps."""
    for _ in range(2):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps


def flops(step) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


def cnn_step(arch: str, width: int, batch: int, size: int, channels_last: bool, augment: str | None):
    torch.manual_seed(0)
    net = _net(arch, width)
    if channels_last:
        if not channels_last_is_safe(net, torch.device("cpu")):
            raise SystemExit(f"cnn_throughput: width {width} has a strided 1x1 convolution that channels_last "
                             "cannot train safely on a CPU (evaluation/downstream.py channels_last_is_safe)")
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters())
    x, y = torch.rand(batch, 1, size, size) * 2 - 1, torch.randint(0, 2, (batch,))
    gen, monai = torch.Generator().manual_seed(0), monai_augment(0) if augment == "monai" else None

    def step():
        xb = x
        if augment == "monai":
            xb = torch.stack([torch.as_tensor(monai(img)) for img in x]).clamp(-1, 1)
        elif augment == "batched":
            xb = classic_augment(x, gen)
        loss = F.cross_entropy(net(xb), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def gan_step(width: float, batch: int, size: int):
    torch.manual_seed(0)
    g, d = build(GanConfig(resolution=size, width=width, num_classes=2))
    og, od = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999)), torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
    z, y, x = torch.randn(batch, 100), torch.randint(0, 2, (batch,)), torch.rand(batch, 1, size, size) * 2 - 1

    def step():   # one D and one G update, non-saturating loss, as dcgan.train does it
        fake = g(z, y)
        loss_d = F.softplus(-d(x, y)).mean() + F.softplus(d(fake.detach(), y)).mean()
        od.zero_grad(set_to_none=True)
        loss_d.backward()
        od.step()
        loss_g = F.softplus(-d(fake, y)).mean()
        og.zero_grad(set_to_none=True)
        loss_g.backward()
        og.step()
    return step


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--arch", default="resnet10")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--gan-width", type=float, default=0.5)
    add_folder_args(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.steps, args.batch, args.size = 1, 4, 32
    with folders(args):
        rows = []
        cases = [("gan trainer (reference)", gan_step(args.gan_width, args.batch, args.size), None),
                 ("cnn before: default layout", cnn_step(args.arch, args.width, args.batch, args.size, False, None), None),
                 ("cnn before: default layout, MONAI augmentation", cnn_step(args.arch, args.width, args.batch, args.size, False, "monai"), None),
                 ("cnn now: channels_last", cnn_step(args.arch, args.width, args.batch, args.size, True, None), None),
                 ("cnn now: channels_last, batched augmentation", cnn_step(args.arch, args.width, args.batch, args.size, True, "batched"), None)]
        for name, step, _ in cases:
            n_flops, seconds = flops(step), timed(step, args.steps)
            rows.append({"case": name, "images_per_second": round(args.batch / seconds, 1),
                         "gflop_per_second": round(n_flops / seconds / 1e9, 2), "mflop_per_image": round(n_flops / args.batch / 1e6, 1)})
            print(f"{name:48s} {rows[-1]['images_per_second']:8.1f} img/s {rows[-1]['gflop_per_second']:7.1f} GFLOP/s")
        res = {"smoke": args.smoke, "machine": f"{os.cpu_count()}-core CPU", "torch": torch.__version__,
               "threads": torch.get_num_threads(), "settings": {k: getattr(args, k) for k in ("steps", "batch", "size", "arch", "width", "gan_width")},
               "rows": rows}
        out = args.results / "cnn_throughput_cpu.json"
        out.write_text(json.dumps(res, indent=1) + "\n")
        print(f"-> {out}")
        return res


if __name__ == "__main__":
    main()
