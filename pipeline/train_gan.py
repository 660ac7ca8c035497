"""train_gan stage: prepared train split -> paths.gan_model/{generator.pt, checkpoint.pt} and
paths.gan_reports/ (sample grids, losses.csv and fid.csv for DVC plots, summary.json).

With gan.fid_every > 0 the domain FID (extractor stage) of the EMA generator against the val split is
checked every that many epochs and generator.pt is the generator with the lowest FID.

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

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from common.images import save_png, tile
from common.io import atomic_file, save_torch, write_json
from common.seeding import stage_rng
from dcgan.models import GanConfig, generate, latents
from dcgan.models import load_generator
from dcgan.train import METRICS, Callbacks, DivergenceError, TrainConfig, Trainer, generator_state
from evaluation import fidelity as fd
from pipeline.checkpoints import load_checkpoint, save_checkpoint
from pipeline.params import parse_stage_args
from pipeline.prepared import load_split
from pipeline.runtime import configure_backends, resolve_runtime
from pipeline.tracking import stage_run

# losses.csv and the checkpoint are DVC outs: no wall-clock figures (images_per_second goes to MLflow and the bar)
TIMING_KEYS = ("images_per_second",)
LOG_COLUMNS = ("step", "epoch", *METRICS, "lr_g", "lr_d")
FID_COLUMNS = ("step", "epoch", "fid_domain")
# Params that do not change what a checkpoint holds: one made under other values still resumes (with or
# without CUDA graphs, with or without deterministic algorithms).
NOT_IN_RUN_KEY = ("steps", "log_every", "checkpoint_every", "grid_every", "fid_every", "fid_samples",
                  "cuda_graphs", "deterministic")


def run_key(g: dict, runtime: dict, seed: int, data_hash: str, world: int) -> str:
    key = {k: v for k, v in g.items() if k not in NOT_IN_RUN_KEY}
    key.update({k: v for k, v in runtime.items() if k not in NOT_IN_RUN_KEY})
    key.update(device=runtime["device"].type, seed=seed, data=data_hash, world=world)
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_log(path: Path, history: list[dict], columns=LOG_COLUMNS) -> None:
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for row in history:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


class FidMonitor:
    """Domain FID of the sampler (EMA generator) on fixed latents against the val split, checked every
    gan.fid_every epochs; keeps the generator with the lowest FID. The val split is held out from GAN
    training and is what model selection may see; the test split is never read here."""

    def __init__(self, extractor: dict, val, n: int, z_dim: int, conditional: bool, device, seed: int):
        self.extractor, self.device = extractor, device
        self.ref = fd.features(val.images, fd.DOMAIN, device, domain_state=extractor)
        labels = np.sort(val.labels)
        self.y = labels[np.linspace(0, len(labels) - 1, n).round().astype(int)] if conditional else None
        self.z = latents(stage_rng(seed, "train_gan", "fid").choice(2**62, n, replace=False), z_dim)
        self.history: list[dict] = []
        self.best: dict | None = None

    def check(self, tr: Trainer, classes: list[str]) -> float:
        g = tr.sampler()
        fake = generate(g, self.z, self.y)
        value = fd.fid(fd.features(fake.numpy(), fd.DOMAIN, self.device, domain_state=self.extractor), self.ref)
        self.history.append({"step": tr.step, "epoch": tr.step / tr.steps_per_epoch, "fid_domain": value})
        if self.best is None or value < self.best["fid"]:
            self.best = {"fid": value, "step": tr.step, "generator": generator_state(tr, classes, g)}
        return value

    def state_dict(self) -> dict:
        return {"history": self.history, "best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.history, self.best = list(state["history"]), state["best"]


def main(argv=None) -> dict:
    args = parse_stage_args(__doc__, argv)
    p = args.params
    g, seed = p["gan"], int(p["base"]["seed"])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    try:
        runtime = resolve_runtime(g, local_rank, world)
    except ValueError as e:
        raise SystemExit(f"train_gan: {e}") from e
    configure_backends(runtime["device"], runtime["deterministic"])  # before any CUDA work, NCCL included
    if world > 1:
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

    fid_every = int(g["fid_every"])
    monitor = None
    if fid_every and writer:
        extractor = torch.load(args.path(p["paths"]["extractor"]) / "extractor.pt", map_location="cpu",
                               weights_only=True)
        if extractor.get("data") != data.data_hash:
            raise SystemExit("train_gan: the domain extractor was trained on other data; run the extractor stage")
        monitor = FidMonitor(extractor, load_split(args.path(p["paths"]["prepared"]), "val"),
                             int(g["fid_samples"]), gan.z_dim, bool(nc), runtime["device"], seed)

    key = run_key(g, runtime, seed, data.data_hash, world)
    ckpt_path = model_dir / "checkpoint.pt"
    resumed_from = 0
    state, found = load_checkpoint(ckpt_path, rename=writer)  # the last checkpoint, or the one before if the last is damaged
    if state is not None:
        if state["run_key"] == key and state["step"] <= cfg.steps:
            trainer.load_state_dict(state)
            if monitor and state.get("fid_monitor"):
                monitor.load_state_dict(state["fid_monitor"])
            resumed_from = trainer.step
            if writer:
                print(f"train_gan: resuming from step {resumed_from} of {cfg.steps} ({found})")
        elif writer:
            why = "another configuration or data" if state["run_key"] != key else f"step {state['step']}"
            print(f"train_gan: {found} is from {why}; starting over")
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
        if monitor and epoch % fid_every == 0:
            pending.append({"step": step, "fid_domain": monitor.check(tr, data.classes)})

    def on_checkpoint(tr: Trainer, step: int) -> None:
        state = tr.state_dict()  # collective under torchrun: every process takes part
        if writer:
            history = [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in state["history"]]
            save_checkpoint(ckpt_path, {**state, "history": history, "run_key": key, "classes": data.classes,
                                        "fid_monitor": monitor.state_dict() if monitor else None})
            write_log(reports / "losses.csv", tr.history)
            if monitor:
                write_log(reports / "fid.csv", monitor.history, FID_COLUMNS)
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
            pending.extend(trainer.history)  # curves before a resume, so this run holds all of them
            if monitor:
                pending.extend({"step": r["step"], "fid_domain": r["fid_domain"]} for r in monitor.history)
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
        seconds = time.perf_counter() - t0  # timings go to the log and MLflow, never into summary.json (an out)
        images_per_second = round((trainer.step - resumed_from) * cfg.batch / seconds, 1) if seconds else 0.0
        if not writer:
            return {}
        if monitor and (not monitor.history or monitor.history[-1]["step"] != trainer.step):
            pending.append({"step": trainer.step, "fid_domain": monitor.check(trainer, data.classes)})
        # the stage's generator: the lowest-FID EMA generator when FID is checked, else the last
        gen_state = monitor.best["generator"] if monitor else generator_state(trainer, data.classes)
        save_torch(model_dir / "generator.pt", gen_state)
        if monitor:
            write_log(reports / "fid.csv", monitor.history, FID_COLUMNS)
        # checkpoint.pt holds the final training state (the last window always ends at cfg.steps)
        grid = trainer.grid_images(load_generator(gen_state, runtime["device"]))
        finals = [reports / "grids" / "final.png"]
        save_png(finals[0], tile(grid, grid_cols))
        for c, name in enumerate(data.classes if nc else []):
            finals.append(reports / f"samples_{name}.png")
            save_png(finals[-1], tile(grid[trainer.fixed_y == c], grid_cols))
        write_log(reports / "losses.csv", trainer.history)
        last = trainer.history[-1] if trainer.history else {}
        trained = trainer.step - resumed_from
        summary = {"steps": trainer.step, "epochs": round(trainer.step /
                   trainer.steps_per_epoch, 2), "train_images": len(data.images), "resolution": res,
                   "num_classes": nc, "classes": data.classes, "device": str(runtime["device"]),
                   "precision": runtime["precision"], "cuda_graphs": trainer.use_graphs, "world_size": world,
                   "final": {k: round(last[k], 5) for k in METRICS if k in last},
                   "generator_step": gen_state["step"],
                   "fid_domain_best": round(monitor.best["fid"], 5) if monitor else None,
                   "fid_domain_last": round(monitor.history[-1]["fid_domain"], 5) if monitor else None}
        summary["cuda_graphs"] = trainer.graph_status  # on | off | fallback (<reason>)
        write_json(reports / "summary.json", summary)  # a DVC out: what the inputs decide, nothing else
        summary["resumed_from_step"] = resumed_from      # returned and logged, not written
        if ml:
            flush_metrics()
            ml.log_param("gan.resolved_cuda_graphs", trainer.graph_status)
            if monitor:
                ml.log_artifact(str(reports / "fid.csv"))
            for path in finals:
                ml.log_artifact(str(path))
            ml.log_artifact(str(reports / "losses.csv"))
            ml.log_artifact(str(reports / "summary.json"))
            if trained:
                ml.log_metrics({"train_seconds": seconds, "train_images_per_second": images_per_second})
    print(f"train_gan: {trainer.step} steps ({summary['epochs']} epochs) on {summary['device']} "
          f"[{summary['precision']}], {images_per_second} img/s -> {model_dir}")
    return summary


if __name__ == "__main__":
    main()
