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
from pipeline.prepared import CONTACT_SHEET_PER_CLASS, contact_sheet_rows, load_split
from pipeline.tracking import numeric_metrics, stage_run
from pipeline.runtime import resolve_device

INDEX_COLUMNS = ("row", "label", "label_name", "seed")


def class_counts(train_counts: dict[str, int], count, ratio: float) -> dict[str, int]:
    if count is not None:
        if int(count) < 1:
            raise ValueError(f"synthesize.count must be a positive number per class, got {count}")
        return {name: int(count) for name in train_counts}
    if ratio <= 0:
        raise ValueError(f"synthesize.ratio must be positive, got {ratio}")
    return {name: max(1, int(round(real * ratio))) for name, real in train_counts.items()}


def load_inputs(args, synth_params: dict):
    """The generator kept by train_gan (its state and the model on the stage's device) and the real train split,
    once both were made from the same classes."""
    paths = args.params["paths"]
    state = torch.load(args.path(paths["gan_model"]) / outputs.GENERATOR, map_location="cpu", weights_only=True)
    generator = load_generator(state, resolve_device(synth_params["device"]))
    train = load_split(args.path(paths["prepared"]), "train")
    if train.classes != state["classes"]:
        raise SystemExit(f"synthesize: the generator was trained on classes {state['classes']}, the prepared data "
                         f"has {train.classes}; run train_gan again")
    return state, generator, train


def wanted_counts(synth_params: dict, train, classes: list[str], conditional: bool) -> tuple[dict, dict]:
    """(images to generate per class, real training images per class); one class ``all`` when unconditional."""
    real = ({name: int((train.labels == i).sum()) for i, name in enumerate(classes)} if conditional
            else {"all": len(train.labels)})
    try:
        return class_counts(real, synth_params["count"], float(synth_params["ratio"])), real
    except ValueError as e:
        raise SystemExit(f"synthesize: {e}") from e


def generate_images(generator, wanted: dict[str, int], conditional: bool, batch: int, seed: int):
    """Labels (-1 when unconditional), one latent seed per image, the images (float16) and the seconds taken."""
    labels = (np.concatenate([np.full(count, i) for i, count in enumerate(wanted.values())]) if conditional
              else np.full(wanted["all"], -1))
    rng = stage_rng(seed, "synthesize", "latents")
    seeds = rng.choice(2**62, size=len(labels), replace=False)
    started = time.perf_counter()
    images = generate(generator, latents(seeds, generator.cfg.z_dim), labels, batch).numpy().astype(np.float16)
    return labels, seeds, images, time.perf_counter() - started


def write_set(folder, images, labels, names: list[str], seeds) -> None:
    """images.npy, index.csv and the contact sheet (up to 16 per class, one block of rows per class)."""
    np.save(folder / outputs.IMAGES, images)
    with open(folder / outputs.INDEX, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(INDEX_COLUMNS)
        writer.writerows(zip(range(len(labels)), labels.tolist(), names, seeds.tolist()))
    save_png(folder / outputs.CONTACT_SHEET, tile(images[contact_sheet_rows(labels)], CONTACT_SHEET_PER_CLASS))


def write_pngs(folder, images, names: list[str]) -> None:
    for i, (image, name) in enumerate(zip(images, names)):
        save_png(folder / "png" / (name or "all") / f"{i:06d}.png", to_uint8(image[0]))


def write_dicoms(folder, images, names: list[str], seeds, generator_step: int, seed: int) -> None:
    """DICOM copies marked as synthetic, one study and series; pydicom only when they are asked for."""
    from pydicom.uid import generate_uid

    from imaging.dicom_write import synthetic_dataset

    uid_rng = stage_rng(seed, "synthesize", "uids")
    study, series = (generate_uid(entropy_srcs=[str(uid_rng.integers(2**62)), k]) for k in ("st", "se"))
    for i, (image, name) in enumerate(zip(images, names)):
        dataset = synthetic_dataset(to_uint8(image[0]), sop_uid=generate_uid(entropy_srcs=[str(seeds[i]), "sop"]),
                                    study_uid=study, series_uid=series, instance=i + 1,
                                    comment=f"Class: {name or 'unconditional'}; latent seed {seeds[i]}; "
                                            f"generator step {generator_step}.")
        path = folder / "dicom" / (name or "all") / f"{i:06d}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        dataset.save_as(path, enforce_file_format=True)


def log_run(args, synth_params: dict, summary: dict, out, seconds: float, images_per_second: float) -> None:
    params = args.params
    with stage_run("synthesize", params, args.root, {"base": params["base"], "synthesize": synth_params}) as ml:
        if ml:
            ml.log_metrics(numeric_metrics({k: summary[k] for k in ("images", "per_class")}))
            ml.log_metrics({"seconds": seconds, "images_per_second": images_per_second})
            ml.log_artifact(str(out / outputs.CONTACT_SHEET))
            ml.log_artifact(str(out / outputs.SUMMARY))


def main(argv=None) -> dict:
    args = parse_stage_args(__doc__, argv)
    params = args.params
    synth_params, seed = params["synthesize"], int(params["base"]["seed"])
    out = args.path(params["paths"]["synthetic"])
    state, generator, train = load_inputs(args, synth_params)
    classes, conditional = state["classes"], generator.cfg.num_classes > 0
    wanted, real = wanted_counts(synth_params, train, classes, conditional)
    labels, seeds, images, seconds = generate_images(generator, wanted, conditional, int(synth_params["batch"]), seed)
    images_per_second = round(len(labels) / max(seconds, 1e-9), 1)  # timings go to the log and MLflow, not the outs
    names = [classes[label] if label >= 0 else "" for label in labels]
    summary = {"images": len(labels), "per_class": wanted, "real_train_per_class": real,
               "resolution": generator.cfg.resolution, "generator_step": state["step"],
               "generator": "EMA" if state.get("ema") else "raw", "png": bool(synth_params["png"]),
               "dicom": bool(synth_params["dicom"])}
    with atomic_dir(out) as tmp:
        write_set(tmp, images, labels, names, seeds)
        if synth_params["png"]:
            write_pngs(tmp, images, names)
        if synth_params["dicom"]:
            write_dicoms(tmp, images, names, seeds, state["step"], seed)
        write_json(tmp / outputs.SUMMARY, summary)
    log_run(args, synth_params, summary, out, seconds, images_per_second)
    print(f"synthesize: {len(labels)} images {wanted} -> {out} [{images_per_second} img/s]")
    return summary

if __name__ == "__main__":
    main()
