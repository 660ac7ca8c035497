"""synthesize stage: models/gan/generator.pt -> paths.synthetic/ images.npy (N,1,S,S float16 in [-1,1]),
index.csv (row, label, label_name, seed), summary.json, contact_sheet.png, and optional PNG / DICOM copies
marked as synthetic.

Counts per class: synthesize.count when set, else synthesize.ratio x that class's real training count.
Each image's latent comes from its own seed (index.csv), so any image can be regenerated alone:
``load_generator(state)(latents([seed], z_dim), torch.tensor([label]))``.
"""
from __future__ import annotations

import csv
import time

import numpy as np
import torch

from common.images import save_png, tile, to_uint8
from common.io import atomic_dir, write_json
from common.seeding import stage_rng
from dcgan.models import generate, latents
from dcgan.models import load_generator
from pipeline import outputs
from pipeline.params import parse_stage_args
from pipeline.prepared import load_split
from pipeline.tracking import numeric_metrics, stage_run
from pipeline.runtime import resolve_device

INDEX_COLUMNS = ("row", "label", "label_name", "seed")


def class_counts(train_counts: dict[str, int], count, ratio: float) -> dict[str, int]:
    if count is not None:
        if int(count) < 1:
            raise ValueError(f"synthesize.count must be a positive number per class, got {count}")
        return {c: int(count) for c in train_counts}
    if ratio <= 0:
        raise ValueError(f"synthesize.ratio must be positive, got {ratio}")
    return {c: max(1, int(round(n * ratio))) for c, n in train_counts.items()}


def main(argv=None) -> dict:
    args = parse_stage_args(__doc__, argv)
    p = args.params
    s, seed = p["synthesize"], int(p["base"]["seed"])
    out = args.path(p["paths"]["synthetic"])
    state = torch.load(args.path(p["paths"]["gan_model"]) / outputs.GENERATOR, map_location="cpu", weights_only=True)
    device = resolve_device(s["device"])
    g = load_generator(state, device)
    classes = state["classes"]
    train = load_split(args.path(p["paths"]["prepared"]), "train")
    if train.classes != classes:
        raise SystemExit(f"synthesize: the generator was trained on classes {classes}, the prepared data has "
                         f"{train.classes}; run train_gan again")
    conditional = g.cfg.num_classes > 0
    real = {c: int((train.labels == i).sum()) for i, c in enumerate(classes)}
    try:
        wanted = class_counts(real if conditional else {"all": len(train.labels)}, s["count"], float(s["ratio"]))
    except ValueError as e:
        raise SystemExit(f"synthesize: {e}") from e

    labels = (np.concatenate([np.full(n, i) for i, n in enumerate(wanted.values())]) if conditional
              else np.full(wanted["all"], -1))
    rng = stage_rng(seed, "synthesize", "latents")
    seeds = rng.choice(2**62, size=len(labels), replace=False)
    t0 = time.perf_counter()
    images = generate(g, latents(seeds, g.cfg.z_dim), labels, int(s["batch"])).numpy().astype(np.float16)
    seconds = time.perf_counter() - t0
    ips = round(len(labels) / max(seconds, 1e-9), 1)  # timings go to the log and MLflow, not to the outs
    names = [classes[y] if y >= 0 else "" for y in labels]

    with atomic_dir(out) as tmp:
        np.save(tmp / outputs.IMAGES, images)
        with open(tmp / outputs.INDEX, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(INDEX_COLUMNS)
            w.writerows(zip(range(len(labels)), labels.tolist(), names, seeds.tolist()))
        sheet = []  # contact sheet: up to 16 per class, one block of rows per class
        for y in (range(len(classes)) if conditional else [-1]):
            sheet.extend(np.flatnonzero(labels == y)[:16].tolist())
        save_png(tmp / outputs.CONTACT_SHEET, tile(images[sheet], 16))
        if s["png"]:
            for i, (img, name) in enumerate(zip(images, names)):
                save_png(tmp / "png" / (name or "all") / f"{i:06d}.png", to_uint8(img[0]))
        if s["dicom"]:  # pydicom only when DICOM copies are asked for
            from pydicom.uid import generate_uid

            from imaging.dicom_write import synthetic_dataset

            uid_rng = stage_rng(seed, "synthesize", "uids")
            study, series = (generate_uid(entropy_srcs=[str(uid_rng.integers(2**62)), k]) for k in ("st", "se"))
            for i, (img, name) in enumerate(zip(images, names)):
                ds = synthetic_dataset(to_uint8(img[0]), sop_uid=generate_uid(entropy_srcs=[str(seeds[i]), "sop"]),
                                       study_uid=study, series_uid=series, instance=i + 1,
                                       comment=f"Class: {name or 'unconditional'}; latent seed {seeds[i]}; "
                                               f"generator step {state['step']}.")
                path = tmp / "dicom" / (name or "all") / f"{i:06d}.dcm"
                path.parent.mkdir(parents=True, exist_ok=True)
                ds.save_as(path, enforce_file_format=True)
        summary = {"images": len(labels), "per_class": wanted, "real_train_per_class": real if conditional else
                   {"all": len(train.labels)}, "resolution": g.cfg.resolution, "generator_step": state["step"],
                   "generator": "EMA" if state.get("ema") else "raw", "png": bool(s["png"]), "dicom": bool(s["dicom"])}
        write_json(tmp / outputs.SUMMARY, summary)

    with stage_run("synthesize", p, args.root, {"base": p["base"], "synthesize": s}) as ml:
        if ml:
            ml.log_metrics(numeric_metrics({k: summary[k] for k in ("images", "per_class")}))
            ml.log_metrics({"seconds": seconds, "images_per_second": ips})
            ml.log_artifact(str(out / outputs.CONTACT_SHEET))
            ml.log_artifact(str(out / outputs.SUMMARY))
    print(f"synthesize: {len(labels)} images {wanted} -> {out} [{ips} img/s]")
    return summary


if __name__ == "__main__":
    main()
