"""train_gan stage: prepared train split -> paths.gan_model/{generator.pt, checkpoint.pt} and
paths.gan_reports/ (sample grids, losses.csv for DVC plots, summary.json).

Resumes from checkpoint.pt when it belongs to the same configuration and data; otherwise starts over.
Multi-GPU: ``torchrun --nproc_per_node N -m pipeline.train_gan`` (process 0 writes files and MLflow).
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from common.images import save_png, tile
from common.io import atomic_file, write_json
from dcgan.models import GanConfig
from dcgan.train import METRICS, Callbacks, DivergenceError, TrainConfig, Trainer, generator_state
from pipeline.params import parse_stage_args
from pipeline.prepared import load_split
from pipeline.tracking import stage_run

LOG_COLUMNS = ("step", "epoch", *METRICS, "lr_g", "lr_d", "images_per_second")
# Params that do not change the trained weights: a checkpoint made under other values still resumes.
NOT_IN_RUN_KEY = ("steps", "log_every", "checkpoint_every", "grid_every")


def resolve_runtime(g: dict, local_rank: int) -> dict:
    """device/precision/channels_last/cuda_graphs from params, with ``auto`` decided once, here."""
    dev = g["device"]
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev == "cuda":
        dev = f"cuda:{local_rank}"
    device = torch.device(dev)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"gan.device={g['device']} but no CUDA device is visible")
    cuda = device.type == "cuda"
    precision = g["precision"]
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    auto = lambda v: cuda if v == "auto" else bool(v)  # noqa: E731
    return {"device": device, "precision": precision, "channels_last": auto(g["channels_last"]),
            "cuda_graphs": auto(g["cuda_graphs"])}


def run_key(g: dict, runtime: dict, seed: int, data_hash: str, world: int) -> str:
    key = {k: v for k, v in g.items() if k not in NOT_IN_RUN_KEY}
    key.update(runtime, device=runtime["device"].type, seed=seed, data=data_hash, world=world)
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_log(path: Path, history: list[dict]) -> None:
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for row in history:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def save_torch(path: Path, obj) -> None:
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)


def main(argv=None) -> dict:
    args = parse_stage_args(__doc__, argv)
    p = args.params
    g, seed = p["gan"], int(p["base"]["seed"])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    try:
        runtime = resolve_runtime(g, local_rank)
    except ValueError as e:
        raise SystemExit(f"train_gan: {e}") from e
    if world > 1:
        if runtime["device"].type == "cuda":
            torch.cuda.set_device(runtime["device"])
        dist.init_process_group("nccl" if runtime["device"].type == "cuda" else "gloo")
    try:
        return _train(args, p, g, seed, runtime, rank, world)
    finally:
        if world > 1:
            dist.destroy_process_group()


def _train(args, p, g, seed, runtime, rank, world) -> dict:
    writer = rank == 0
    model_dir, reports = args.path(p["paths"]["gan_model"]), args.path(p["paths"]["gan_reports"])
    data = load_split(args.path(p["paths"]["prepared"]), "train")
    res = data.images.shape[-1]
    nc = int(g["num_classes"])
    if nc not in (0, len(data.classes)):
        raise SystemExit(f"train_gan: gan.num_classes={nc}, but the prepared data has {len(data.classes)} classes "
                         f"{data.classes}; set it to {len(data.classes)} (conditional) or 0 (unconditional)")
    try:
        gan = GanConfig(resolution=res, z_dim=int(g["z_dim"]), width=float(g["width"]), num_classes=nc,
                        embed_dim=int(g["embed_dim"]), spectral_norm=bool(g["spectral_norm"]))
        cfg = TrainConfig(steps=int(g["steps"]), batch=int(g["batch"]), lr_g=float(g["lr_g"]), lr_d=float(g["lr_d"]),
                          betas=tuple(float(b) for b in g["betas"]), loss=g["loss"],
                          label_smoothing=float(g["label_smoothing"]), diffaugment=g["diffaugment"] or "",
                          ema_decay=float(g["ema_decay"]), precision=runtime["precision"],
                          channels_last=runtime["channels_last"], cuda_graphs=runtime["cuda_graphs"],
                          log_every=int(g["log_every"]), collapse_patience=int(g["collapse_patience"]))
        trainer = Trainer(gan, cfg, torch.from_numpy(data.images), torch.from_numpy(data.labels) if nc else None,
                          runtime["device"], seed)
    except ValueError as e:
        raise SystemExit(f"train_gan: {e}") from e

    key = run_key(g, runtime, seed, data.data_hash, world)
    ckpt_path = model_dir / "checkpoint.pt"
    resumed_from = 0
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if state.get("run_key") == key and state["step"] <= cfg.steps:
            trainer.load_state_dict(state)
            resumed_from = trainer.step
            if writer:
                print(f"train_gan: resuming from step {resumed_from} of {cfg.steps} ({ckpt_path})")
        elif writer:
            why = "another configuration or data" if state.get("run_key") != key else f"step {state['step']}"
            print(f"train_gan: {ckpt_path} is from {why}; starting over")
        del state
    if writer and not resumed_from:
        shutil.rmtree(reports, ignore_errors=True)
    if writer:
        (reports / "grids").mkdir(parents=True, exist_ok=True)
        model_dir.mkdir(parents=True, exist_ok=True)

    grid_cols = max(1, cfg.grid_size // max(nc, 1) // 2) if nc else 8
    pending: list[dict] = []   # MLflow step metrics not yet sent

    def save_grid(tr: Trainer, name: str) -> Path:
        path = reports / "grids" / name
        save_png(path, tile(tr.grid_images(), grid_cols))
        return path

    def on_log(tr: Trainer, step: int, m: dict) -> None:
        pending.append({"step": step, **m})
        if writer:
            bar.update(step - bar.n)
            bar.set_postfix({"img/s": f"{m['images_per_second']:.0f}", "D": f"{m['loss_d']:.3f}",
                             "G": f"{m['loss_g']:.3f}", "D(x)": f"{m['d_real']:.2f}",
                             "D(G(z))": f"{m['d_fake']:.2f}"}, refresh=False)

    def on_epoch(tr: Trainer, step: int, epoch: int) -> None:
        if writer and int(g["grid_every"]) and epoch % int(g["grid_every"]) == 0:
            path = save_grid(tr, f"epoch_{epoch:06d}.png")
            if ml:
                ml.log_artifact(str(path), "grids")

    def on_checkpoint(tr: Trainer, step: int) -> None:
        state = tr.state_dict()  # collective under torchrun: every process takes part
        if writer:
            save_torch(ckpt_path, {**state, "run_key": key, "classes": data.classes})
            write_log(reports / "losses.csv", tr.history)
            flush_metrics()

    def flush_metrics() -> None:
        if ml and pending:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            batch = [Metric(k, float(v), now, int(row["step"])) for row in pending for k, v in row.items()
                     if k != "step"]
            client, run_id = ml.tracking.MlflowClient(), ml.active_run().info.run_id
            for i in range(0, len(batch), 1000):  # MLflow's limit per batch
                client.log_batch(run_id, metrics=batch[i:i + 1000])
        pending.clear()

    stage_params = {"base": p["base"], "gan": g}
    with stage_run("train_gan", p, args.root, stage_params) if writer else nullcontext() as ml:
        if ml:
            ml.log_params({"gan.resolution": res, "gan.resolved_precision": runtime["precision"],
                           "gan.resolved_device": str(runtime["device"]), "gan.world_size": world,
                           "gan.resumed_from_step": resumed_from})
            pending.extend(trainer.history)  # curve before a resume, so this run holds all of it
        bar = tqdm(total=cfg.steps, initial=trainer.step, desc="train_gan", unit="step", disable=not writer,
                   mininterval=1)
        t0 = time.perf_counter()
        try:
            trainer.run(cfg.steps, Callbacks(on_log, on_epoch, on_checkpoint), int(g["checkpoint_every"]))
        except DivergenceError as e:
            bar.close()
            if writer:
                write_log(reports / "losses.csv", trainer.history)
                flush_metrics()
            raise SystemExit(f"train_gan: stopped: {e}") from e
        bar.close()
        seconds = time.perf_counter() - t0
        if not writer:
            return {}
        gen_state = generator_state(trainer, data.classes)
        save_torch(model_dir / "generator.pt", gen_state)
        # The last window always ends at cfg.steps, so checkpoint.pt is the final state too.
        grid = trainer.grid_images()
        finals = [reports / "grids" / "final.png"]
        save_png(finals[0], tile(grid, grid_cols))
        for c, name in enumerate(data.classes if nc else []):
            finals.append(reports / f"samples_{name}.png")
            save_png(finals[-1], tile(grid[trainer.fixed_y == c], grid_cols))
        write_log(reports / "losses.csv", trainer.history)
        last = trainer.history[-1] if trainer.history else {}
        trained = trainer.step - resumed_from
        summary = {"steps": trainer.step, "resumed_from_step": resumed_from, "epochs": round(trainer.step /
                   trainer.steps_per_epoch, 2), "train_images": len(data.images), "resolution": res,
                   "num_classes": nc, "classes": data.classes, "device": str(runtime["device"]),
                   "precision": runtime["precision"], "cuda_graphs": trainer.use_graphs, "world_size": world,
                   "seconds": round(seconds, 2),
                   "images_per_second": round(trained * cfg.batch / seconds, 1) if trained else None,
                   "final": {k: round(last[k], 5) for k in METRICS if k in last}}
        write_json(reports / "summary.json", summary)
        if ml:
            flush_metrics()
            for path in finals:
                ml.log_artifact(str(path))
            ml.log_artifact(str(reports / "losses.csv"))
            ml.log_artifact(str(reports / "summary.json"))
            if summary["images_per_second"]:
                ml.log_metric("train_images_per_second", summary["images_per_second"])
    print(f"train_gan: {trainer.step} steps ({summary['epochs']} epochs) on {summary['device']} "
          f"[{summary['precision']}], {summary['images_per_second']} img/s -> {model_dir}")
    return summary


if __name__ == "__main__":
    main()
