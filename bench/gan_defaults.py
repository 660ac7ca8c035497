"""Which GAN options make the best images on the real data? One factor at a time from the paper's DCGAN,
on the Kermany chest X-rays in ../shared/data, scored by the Fréchet distance in the domain extractor's
feature space (evaluation/features.py, trained on the train split only) between generated images and the
real *validation* split (the test split is never read). Each configuration trains for --steps steps and is
scored at several points, so collapse or late divergence shows.

    python bench/gan_defaults.py [--resolution 32] [--steps 3000] [--width 0.5] [--seeds 1] [--smoke]

Prints a table and writes bench/results/gan_defaults_<resolution>.json (--results elsewhere). On a 2-core CPU
the default settings take about half an hour; use --resolution 64 --width 1 --steps 10000 on a GPU. --smoke:
every configuration (or those --only names) for 2 steps on a generated miniature of the Kermany folder, in a
temporary folder.

The extractor is trained afresh by each invocation, and is not bit-identical between invocations (thread
counts change float sums), so every run keeps the real-real floor of the extractor that scored it
(`fid_real_train_vs_val`). Configurations are compared exactly only within one invocation: run a new one with
--only together with the configuration it is to beat.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dcgan.models import GanConfig, generate  # noqa: E402
from dcgan.train import TrainConfig, Trainer  # noqa: E402
from evaluation.features import ExtractorConfig, extract, train_extractor  # noqa: E402
from evaluation.fid import feature_stats, fid, frechet_distance  # noqa: E402
from pipeline.prepared import load_split  # noqa: E402
from pipeline.runtime import resolve_runtime  # noqa: E402
from _data import add_folder_args, folders, kermany, kermany_miniature  # noqa: E402  (bench/ is on sys.path)

PAPER = dict(diffaugment="", ema_decay=0.0, loss="bce", label_smoothing=0.0, lr_g=2e-4, lr_d=2e-4)
DA = dict(diffaugment="translation,cutout")
EMA = dict(ema_decay=0.999)
CONFIGS = {
    "dcgan (paper)": ({}, False),
    "+ema": (EMA, False),
    "+diffaugment": (DA, False),
    "+diffaugment +ema": ({**DA, **EMA}, False),
    "+diffaugment +ema +spectral_norm": ({**DA, **EMA}, True),
    "+diffaugment +ema +hinge": ({**DA, **EMA, "loss": "hinge"}, False),
    "+diffaugment +ema +label_smoothing 0.1": ({**DA, **EMA, "label_smoothing": 0.1}, False),
    "+diffaugment +ema lr_d 4e-4 lr_g 1e-4": ({**DA, **EMA, "lr_d": 4e-4, "lr_g": 1e-4}, False),
    "+diffaugment +ema +color": ({**EMA, "diffaugment": "color,translation,cutout"}, False),  # the paper's policy
    # StyleGAN2-ADA's cifar config (32 px, batch 64) uses gamma 0.01; its auto rule 0.0002 * res^2 / batch gives 0.003
    "+diffaugment +ema +r1 0.01": ({**DA, **EMA, "r1_gamma": 0.01}, False),
}
# runs merge into an existing JSON (--only) only when these agree
SETTINGS = ("smoke", "resolution", "width", "steps", "batch", "extractor_steps", "train_images", "val_images")


def check_same_settings(old: dict, new: dict, path: Path) -> None:
    """Runs merge into an existing JSON only when it was made with the same settings."""
    differ = {k: (old[k], new[k]) for k in SETTINGS if k in old and old[k] != new[k]}
    if differ:
        raise SystemExit(f"{path} holds runs with other settings ("
                         + ", ".join(f"{k}: {a} there, {b} here" for k, (a, b) in differ.items())
                         + "): runs merge only with runs of the same settings; pass --results another folder")


def merge(old: dict, new: dict, old_floor: float | None = None) -> dict:
    """Configurations -> runs: ``new`` runs replace ``old`` runs of the same configuration and seed; the others
    stay. An old run without a floor of its own gets ``old_floor``, the floor of the file it was kept in."""
    floor = {} if old_floor is None else {"fid_real_train_vs_val": old_floor}
    merged = {name: {"runs": [{**floor, **r} for r in c["runs"]]} for name, c in old.items()}
    for name, c in new.items():
        seeds = {r["seed"] for r in c["runs"]}
        merged[name] = {"runs": [r for r in merged.get(name, {}).get("runs", []) if r["seed"] not in seeds]
                        + c["runs"]}
    return merged


def summarise(configs: dict) -> dict:
    """Each configuration's final FID (a run's last evaluation) as mean and std over its seeds."""
    out = {}
    for name, c in configs.items():
        final = [r["fid_by_step"][max(r["fid_by_step"], key=int)] for r in c["runs"]]  # keys: int here, str from JSON
        out[name] = {"runs": c["runs"], "fid_final_mean": round(float(np.mean(final)), 4),
                     "fid_final_std": round(float(np.std(final)), 4), "seeds": len(final)}
    return out


def sample(trainer: Trainer, labels: np.ndarray, seed: int) -> np.ndarray:
    """One generated image per label in ``labels`` (class mix of the reference set), from the sampler."""
    g = trainer.sampler()
    z = torch.randn(len(labels), g.cfg.z_dim, generator=torch.Generator().manual_seed(seed))
    return generate(g, z, labels).numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--evals", type=int, default=3, help="FID evaluations per run, evenly spaced")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed+seeds-1")
    ap.add_argument("--extractor-steps", type=int, default=1500)
    ap.add_argument("--only", nargs="*", help="configuration names to run (default: all; none: only the floor); "
                    "results merge into an existing JSON")
    add_folder_args(ap)
    args = ap.parse_args()
    if args.smoke:
        args.resolution, args.width, args.steps, args.batch, args.evals = 32, 0.125, 2, 8, 2
        args.seeds, args.first_seed, args.extractor_steps = 1, 0, 3  # --only as given (default: all)
    with folders(args):
        run(args)


def run(args):
    if args.smoke:
        args.shared = args.work / "miniature"
        kermany_miniature(args.shared)

    runtime = resolve_runtime({"device": "auto", "precision": "auto", "channels_last": "auto",
                               "cuda_graphs": "auto"}, 0)
    device = runtime["device"]
    src = kermany(Path(args.shared), args.resolution, args.work, workers=1 if args.smoke else 0)
    train, val = load_split(src, "train"), load_split(src, "val")
    results = {"smoke": args.smoke, "resolution": args.resolution, "width": args.width, "steps": args.steps,
               "batch": args.batch, "extractor_steps": args.extractor_steps, "device": str(device),
               "train_images": len(train.images), "val_images": len(val.images),
               "extractor": "evaluation.features.DomainNet (label + rotation), train split only",
               "reference": "val split"}
    out = args.results / f"gan_defaults_{args.resolution}.json"
    old = json.loads(out.read_text()) if args.only is not None and out.exists() else None
    if old is not None:  # checked before any training, not after
        check_same_settings(old, results, out)

    t0 = time.perf_counter()
    net = train_extractor(train.images, train.labels, ExtractorConfig(resolution=args.resolution,
                                                                       num_classes=len(train.classes)),
                          steps=args.extractor_steps, seed=0, device=device)
    ref = extract(net, val.images)
    mu_v, s_v = feature_stats(ref)
    # real-real floor: a random train sample of the val size (the split is in file order, grouped by class)
    pick = np.random.default_rng(0).choice(len(train.images), len(val.images), replace=False)
    floor = fid(extract(net, train.images[pick]), ref)
    print(f"extractor trained in {time.perf_counter() - t0:.0f} s; {len(train.images)} train, {len(val.images)} val "
          f"images at {args.resolution}px; FID(train sample, val) = {floor:.3f} (real-real floor)")
    results.update(fid_real_train_vs_val=round(floor, 4), configs={})
    evals = sorted({int(args.steps * (i + 1) / args.evals) for i in range(args.evals)})
    for name, (opts, sn) in CONFIGS.items():
        if args.only is not None and name not in args.only:
            continue
        runs = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            gan = GanConfig(resolution=args.resolution, width=args.width, num_classes=len(train.classes),
                            spectral_norm=sn)
            cfg = TrainConfig(**{**PAPER, **opts}, steps=args.steps, batch=args.batch, log_every=100,
                              precision=runtime["precision"], channels_last=runtime["channels_last"],
                              cuda_graphs=runtime["cuda_graphs"], collapse_patience=0)
            tr = Trainer(gan, cfg, torch.from_numpy(train.images), torch.from_numpy(train.labels), device, seed)
            t = time.perf_counter()
            curve = {}
            for step in evals:
                tr.run(step)
                fake = sample(tr, val.labels, seed=100 + seed)
                curve[step] = round(frechet_distance(*feature_stats(extract(net, fake)), mu_v, s_v), 4)
            runs.append({"seed": seed, "fid_by_step": curve, "seconds": round(time.perf_counter() - t, 1),
                         "fid_real_train_vs_val": round(floor, 4),   # the floor of the extractor that scored it
                         "final_losses": {k: round(tr.history[-1][k], 4) for k in ("loss_d", "loss_g", "d_real",
                                                                                  "d_fake")}})
        results["configs"][name] = {"runs": runs}
        print(f"{name:42s} FID by step {runs[0]['fid_by_step']} [{runs[0]['seconds']} s]", flush=True)
    results["configs"] = summarise(merge(old["configs"], results["configs"], old.get("fid_real_train_vs_val"))
                                   if old else results["configs"])
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
