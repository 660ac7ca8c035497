"""GAN training throughput: (a) a faithful re-implementation of pytorch/examples dcgan/main.py (a folder of
PNGs read by a DataLoader with workers, fp32, Sigmoid + BCELoss, separate real/fake backward passes)
against (b) our dcgan.train.Trainer as train_gan runs it (data on the device; on CUDA bf16 autocast,
channels_last and CUDA graphs), same device, same images, same network sizes (ngf = ndf = 64, z 100,
1 channel), at batch 64, 128 and 256.

The images: the Kermany train split prepared at 64x64 by the prepare stage (bench/work/shared/kermany,
made on first use from ../shared/data), written as 8-bit PNGs for (a); (b) loads the same PNGs into one
tensor on the device.

    python bench/gan_throughput.py [--batches 64 128 256] [--seconds 20] [--workers 8] [--demo]

``--demo`` adds the CPU demo configuration (params.yaml's gan section on the demo data). Prints a table
and writes bench/results/gan_throughput_<device>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.images import to_uint8  # noqa: E402
from dcgan.models import GanConfig  # noqa: E402
from dcgan.train import TrainConfig, Trainer  # noqa: E402
from pipeline.params import load_params  # noqa: E402
from pipeline.prepared import load_split  # noqa: E402
from pipeline.runtime import configure_backends, resolve_runtime  # noqa: E402
from pipeline.train_gan import train_config  # noqa: E402
from _data import add_folder_args, folders, kermany, kermany_miniature  # noqa: E402  (bench/ is on sys.path)


# ---- (a) pytorch/examples dcgan/main.py, re-implemented faithfully (nc=1, PIL instead of torchvision) ----
class RefGenerator(nn.Module):
    def __init__(self, nz=100, ngf=64, nc=1):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, x):
        return self.main(x)


class RefDiscriminator(nn.Module):
    def __init__(self, ndf=64, nc=1):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid())

    def forward(self, x):
        return self.main(x).view(-1, 1).squeeze(1)


def weights_init(m):
    name = m.__class__.__name__
    if name.find("Conv") != -1:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif name.find("BatchNorm") != -1:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class PngFolder(torch.utils.data.Dataset):
    """ImageFolder + Resize/CenterCrop (no-ops at 64) + ToTensor + Normalize((0.5,), (0.5,))."""

    def __init__(self, files):
        self.files = files

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        a = np.asarray(Image.open(self.files[i]).convert("L"), dtype=np.float32) / 255.0
        return (torch.from_numpy(a)[None] - 0.5) / 0.5, 0


def reference_throughput(files, batch, device, workers, seconds) -> float:
    loader = torch.utils.data.DataLoader(PngFolder(files), batch_size=batch, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=workers > 0)
    netG, netD = RefGenerator().to(device), RefDiscriminator().to(device)
    netG.apply(weights_init), netD.apply(weights_init)
    criterion = nn.BCELoss()
    optD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real_label, fake_label = 1, 0
    done, t0, warm = 0, None, 5
    while True:
        for data, _ in loader:
            netD.zero_grad()
            real_cpu = data.to(device)
            b = real_cpu.size(0)
            label = torch.full((b,), real_label, dtype=real_cpu.dtype, device=device)
            output = netD(real_cpu)
            errD_real = criterion(output, label)
            errD_real.backward()
            noise = torch.randn(b, 100, 1, 1, device=device)
            fake = netG(noise)
            label.fill_(fake_label)
            output = netD(fake.detach())
            errD_fake = criterion(output, label)
            errD_fake.backward()
            optD.step()
            netG.zero_grad()
            label.fill_(real_label)
            output = netD(fake)
            errG = criterion(output, label)
            errG.backward()
            optG.step()
            errD_real.item(), errG.item()  # the script prints D(x), D(G(z)) and losses every step: a sync
            done += 1
            if done == warm:
                t0, start = time.perf_counter(), done
            elif t0 is not None and time.perf_counter() - t0 > seconds:
                return (done - start) * batch / (time.perf_counter() - t0)


# ---- (b) ours ---------------------------------------------------------------------------------------------
def ours_throughput(images, labels, gan: GanConfig, cfg: TrainConfig, device, seconds) -> dict:
    tr = Trainer(gan, cfg, images, labels if gan.num_classes else None, device, seed=0)
    tr.run(20)                                   # warm-up, cuDNN autotuning, CUDA graph capture
    sync = torch.cuda.synchronize if tr.cuda else (lambda: None)
    sync()
    steps, t0 = 20, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        tr.run(tr.step + steps)
        sync()
        if time.perf_counter() - t0 < seconds / 4:
            steps *= 2
    sync()
    elapsed = time.perf_counter() - t0
    return {"images_per_second": round((tr.step - 20) * cfg.batch / elapsed, 1), "cuda_graphs": tr.graph_status,
            "precision": cfg.precision, "channels_last": cfg.channels_last}


def write_pngs(images: np.ndarray, labels: np.ndarray, classes, dst: Path) -> list[Path]:
    files = []
    for i, (img, y) in enumerate(zip(images, labels)):
        f = dst / classes[y] / f"{i:05d}.png"
        if not f.exists():
            f.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(to_uint8(img[0])).save(f)
        files.append(f)
    return files


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--seconds", type=float, default=20.0, help="timed seconds per configuration")
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="(a)'s DataLoader workers")
    ap.add_argument("--demo", action="store_true", help="also time the demo configuration from params.yaml")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--ablation", action="store_true",
                    help="also time ours at the largest batch without CUDA graphs, and in plain fp32 eager mode")
    add_folder_args(ap)
    args = ap.parse_args()
    with folders(args):
        run(args)


def run(args) -> None:
    if args.smoke:  # the same measurements on the generated miniature, a fraction of a second each
        args.shared = args.work / "shared"
        kermany_miniature(args.shared)
        args.batches, args.seconds, args.workers, args.demo = [4], min(args.seconds, 0.3), 0, False

    params = load_params(ROOT / "params.yaml")
    g = params["gan"]
    runtime = resolve_runtime(g, 0)
    device = runtime["device"]
    configure_backends(device, runtime["deterministic"])   # what the train_gan stage sets (cuDNN autotuner)
    split = load_split(kermany(Path(args.shared), work=args.work), "train")
    files = write_pngs(split.images, split.labels, split.classes, args.work / "gan_png")
    # (b) reads the very same PNG files
    images = torch.stack([PngFolder(files)[i][0] for i in range(len(files))]).to(torch.float16)
    labels = torch.from_numpy(split.labels)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'cpu'} x{os.cpu_count()}"
    print(f"device: {name}; torch {torch.__version__}; {len(files)} Kermany train images, 64x64 PNG; "
          f"ours: {runtime['precision']}, channels_last={runtime['channels_last']}, cuda_graphs={runtime['cuda_graphs']}, "
          f"diffaugment={g['diffaugment']!r}, ema={g['ema_decay']}")

    rows = []
    for batch in args.batches:
        row = {"batch": batch}
        if not args.skip_reference:
            row["reference_images_per_second"] = round(reference_throughput(files, batch, device, args.workers,
                                                                            args.seconds), 1)
        variants = [(0, "ours_unconditional", {}), (len(split.classes), "ours_conditional", {})]
        if args.ablation and batch == max(args.batches):
            variants += [(0, "ours_unconditional_no_graphs", {"cuda_graphs": False}),
                         (0, "ours_unconditional_fp32_eager",
                          {"cuda_graphs": False, "precision": "fp32", "channels_last": False})]
        for nc, key, change in variants:
            gan = GanConfig(resolution=64, width=1.0, num_classes=nc, spectral_norm=bool(g["spectral_norm"]))
            cfg = train_config(g, runtime | change, steps=10**9, batch=batch, log_every=10**9)
            try:
                row[key] = ours_throughput(images, labels, gan, cfg, device, args.seconds)
            except Exception as e:  # a failed configuration is a result too; the others still run
                row[key] = {"error": f"{type(e).__name__}: {e}"[:2000]}
        if "reference_images_per_second" in row and "images_per_second" in row["ours_unconditional"]:
            row["speedup_unconditional"] = round(row["ours_unconditional"]["images_per_second"]
                                                 / row["reference_images_per_second"], 2)
        rows.append(row)
        print(json.dumps(row))

    result = {"device": name, "torch": torch.__version__, "smoke": args.smoke, "images": len(files), "resolution": 64,
              "reference_workers": args.workers, "seconds_per_config": args.seconds, "rows": rows}
    if args.demo:
        demo = load_split(ROOT / params["paths"]["prepared"], "train")
        gan = GanConfig(resolution=demo.images.shape[-1], width=float(g["width"]), num_classes=int(g["num_classes"]))
        cfg = train_config(g, runtime, steps=10**9, log_every=10**9)
        result["demo"] = {"batch": cfg.batch, "width": gan.width, "resolution": gan.resolution,
                          **ours_throughput(torch.from_numpy(demo.images), torch.from_numpy(demo.labels), gan, cfg,
                                            device, args.seconds)}
        print("demo:", json.dumps(result["demo"]))
    out = args.results / f"gan_throughput_{device.type}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
