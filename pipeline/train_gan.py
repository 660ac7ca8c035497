"""train_gan stage: prepared train split -> paths.gan_model/generator.pt and paths.gan_reports/ (sample
grids, losses.csv and fid.csv for DVC plots, summary.json).

With gan.fid_every > 0 the domain FID (extractor stage) of the EMA generator against the val split is
checked every that many epochs and generator.pt is the generator with the lowest FID.

While it trains, the stage keeps checkpoint.pt and the reports so far in paths.gan_work, which is not a DVC
out: DVC deletes a stage's outs before running it, and a stage with `persist` outs is never restored from DVC's
run cache (so every queued experiment would retrain its GAN). A run resumes from paths.gan_work/checkpoint.pt
when it belongs to the same params, data, code and (with FID checks) extractor and val split, otherwise starts
over; the finished reports are then copied to paths.gan_reports.
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

from common import PACKAGES
from common.images import save_png, tile
from common.io import atomic_file, save_torch, write_json
from common.seeding import stage_rng
from dcgan.models import GanConfig, generate, latents
from dcgan.models import load_generator
from dcgan.train import METRICS, Callbacks, DivergenceError, TrainConfig, Trainer, generator_state
from evaluation import fidelity as fd
from pipeline import outputs
from pipeline.checkpoints import load_checkpoint, save_checkpoint
from pipeline.params import parse_stage_args
from pipeline.prepared import Split, load_split
from pipeline.runtime import configure_backends, resolve_runtime
from pipeline.tracking import stage_run

# losses.csv (a DVC out) is written from the checkpoint's history: no wall-clock figures in either
# (images_per_second goes to MLflow and the bar)
TIMING_KEYS = ("images_per_second",)
LOG_COLUMNS = ("step", "epoch", *METRICS, "lr_g", "lr_d")
FID_COLUMNS = ("step", "epoch", "fid_domain")


def code_hash(root: Path = Path(__file__).resolve().parents[1]) -> str:
    """The source of every module of this project's packages. A checkpoint written by other code starts over:
    resuming it would give outputs that the code of this run does not make (and DVC would record them as its)."""
    digest = hashlib.sha256()
    for path in sorted(p for package in PACKAGES for p in (root / package).rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def fid_inputs(extractor_file: Path, val: Split) -> str:
    """What the FID checks read besides the generator: the domain extractor file's bytes and the val split's
    images and labels (they choose generator.pt and write fid.csv)."""
    digest = hashlib.sha256(Path(extractor_file).read_bytes())
    digest.update(val.data_hash.encode())
    return digest.hexdigest()[:16]


def run_key(gan_params: dict, runtime: dict, seed: int, data_hash: str, world: int, code: str = "",
            fid: str = "") -> str:
    """Identifies what a run writes: a checkpoint resumes only under the same key. Every gan param is in it, the
    resolved runtime in place of ``auto``: steps and checkpoint_every close log windows (a finished run is not
    continued, it trains afresh), CUDA graphs (capturable Adam) and deterministic algorithms do other arithmetic
    on CUDA. ``fid``: fid_inputs() when the FID checks are on, else ""."""
    key = {**gan_params, **runtime}
    key.update(device=runtime["device"].type, seed=seed, data=data_hash, world=world, code=code, fid=fid)
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_log(path: Path, history: list[dict], columns=LOG_COLUMNS) -> None:
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


class FidMonitor:
    """Domain FID of the sampler (EMA generator) on fixed latents against the val split, checked every
    gan.fid_every epochs; keeps the generator with the lowest FID. The val split is held out from GAN
    training and is what model selection may see; the test split is never read here."""

    def __init__(self, extractor: dict, val, samples: int, z_dim: int, conditional: bool, device, seed: int):
        self.extractor, self.device = extractor, device
        self.ref = fd.features(val.images, fd.DOMAIN, device, domain_state=extractor)
        labels = np.sort(val.labels)
        self.y = labels[np.linspace(0, len(labels) - 1, samples).round().astype(int)] if conditional else None
        self.z = latents(stage_rng(seed, "train_gan", "fid").choice(2**62, samples, replace=False), z_dim)
        self.history: list[dict] = []
        self.best: dict | None = None

    def check(self, trainer: Trainer, classes: list[str]) -> float:
        sampler = trainer.sampler()
        fake = generate(sampler, self.z, self.y)
        value = fd.fid(fd.features(fake.numpy(), fd.DOMAIN, self.device, domain_state=self.extractor), self.ref)
        self.history.append({"step": trainer.step, "epoch": trainer.step / trainer.steps_per_epoch, "fid_domain": value})
        if self.best is None or value < self.best["fid"]:
            self.best = {"fid": value, "step": trainer.step, "generator": generator_state(trainer, classes, sampler)}
        return value

    def state_dict(self) -> dict:
        return {"history": self.history, "best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.history, self.best = list(state["history"]), state["best"]


class TrainingRun:
    """What happens around the training loop: the trainer's callbacks (log window, epoch end, checkpoint) as
    methods, the progress bar, and the MLflow step metrics not yet sent. Only process 0 (``writer``) writes."""

    def __init__(self, trainer: Trainer, gan_params: dict, reports: Path, checkpoint: Path, key: str,
                 classes: list[str], monitor: FidMonitor | None, writer: bool):
        self.trainer, self.reports, self.checkpoint, self.key = trainer, reports, checkpoint, key
        self.classes, self.monitor, self.writer = classes, monitor, writer
        self.grid_every, self.fid_every = int(gan_params["grid_every"]), int(gan_params["fid_every"])
        num_classes = trainer.gan.num_classes
        self.grid_cols = max(1, trainer.cfg.grid_size // num_classes // 2) if num_classes else 8
        self.pending: list[dict] = []   # MLflow step metrics not yet sent
        self.ml = None                  # the MLflow module inside the stage's run, when logging
        self.bar = tqdm(total=trainer.cfg.steps, initial=trainer.step, desc="train_gan", unit="step",
                        disable=not writer, mininterval=1)

    def callbacks(self) -> Callbacks:
        return Callbacks(self.on_log, self.on_epoch, self.on_checkpoint)

    def on_log(self, trainer: Trainer, step: int, metrics: dict) -> None:
        self.pending.append({"step": step, **metrics})
        if self.writer:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix({"img/s": f"{metrics['images_per_second']:.0f}", "D": f"{metrics['loss_d']:.3f}",
                                  "G": f"{metrics['loss_g']:.3f}", "D(x)": f"{metrics['d_real']:.2f}",
                                  "D(G(z))": f"{metrics['d_fake']:.2f}"}, refresh=False)

    def on_epoch(self, trainer: Trainer, step: int, epoch: int) -> None:
        if self.writer and self.grid_every and epoch % self.grid_every == 0:
            path = self.reports / outputs.GRIDS / f"epoch_{epoch:06d}.png"
            save_png(path, tile(trainer.grid_images(), self.grid_cols))
            if self.ml:
                self.ml.log_artifact(str(path), outputs.GRIDS)
        if self.monitor and epoch % self.fid_every == 0:
            self.pending.append({"step": step, "fid_domain": self.monitor.check(trainer, self.classes)})

    def on_checkpoint(self, trainer: Trainer, step: int) -> None:
        state = trainer.state_dict()  # collective under torchrun: every process takes part
        if self.writer:
            history = [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in state["history"]]
            save_checkpoint(self.checkpoint, {**state, "history": history, "run_key": self.key, "classes": self.classes,
                                              "fid_monitor": self.monitor.state_dict() if self.monitor else None})
            self.write_logs()
            self.flush_metrics()

    def write_logs(self) -> None:
        write_log(self.reports / outputs.LOSSES, self.trainer.history)
        if self.monitor:
            write_log(self.reports / outputs.FID_LOG, self.monitor.history, FID_COLUMNS)

    def flush_metrics(self) -> None:
        if self.ml and self.pending:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            batch = [Metric(k, float(v), now, int(row["step"])) for row in self.pending for k, v in row.items()
                     if k != "step"]
            client, run_id = self.ml.tracking.MlflowClient(), self.ml.active_run().info.run_id
            for i in range(0, len(batch), 1000):  # MLflow's limit per batch
                client.log_batch(run_id, metrics=batch[i:i + 1000])
        self.pending.clear()


def main(argv=None) -> dict:
    args = parse_stage_args(__doc__, argv)
    gan_params = args.params["gan"]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    try:
        runtime = resolve_runtime(gan_params, local_rank, world)
    except ValueError as e:
        raise SystemExit(f"train_gan: {e}") from e
    configure_backends(runtime["device"], runtime["deterministic"])  # before any CUDA work, NCCL included
    if world > 1:
        dist.init_process_group("nccl" if runtime["device"].type == "cuda" else "gloo")
    try:
        return train(args, runtime, rank, world)
    finally:
        if world > 1:
            dist.destroy_process_group()


def build_trainer(gan_params: dict, runtime: dict, data, seed: int) -> Trainer:
    """The Trainer for the prepared train split under gan.* and the resolved runtime."""
    num_classes = int(gan_params["num_classes"])
    if num_classes not in (0, len(data.classes)):
        raise SystemExit(f"train_gan: gan.num_classes={num_classes}, but the prepared data has {len(data.classes)} "
                         f"classes {data.classes}; set it to {len(data.classes)} (conditional) or 0 (unconditional)")
    try:
        gan = GanConfig(resolution=data.images.shape[-1], z_dim=int(gan_params["z_dim"]),
                        width=float(gan_params["width"]), num_classes=num_classes,
                        embed_dim=int(gan_params["embed_dim"]), spectral_norm=bool(gan_params["spectral_norm"]))
        return Trainer(gan, train_config(gan_params, runtime), torch.from_numpy(data.images),
                       torch.from_numpy(data.labels) if num_classes else None, runtime["device"], seed)
    except ValueError as e:
        raise SystemExit(f"train_gan: {e}") from e


def train_config(gan_params: dict, runtime: dict, **override) -> TrainConfig:
    """gan.* params and the resolved runtime (precision, channels_last, cuda_graphs) as the trainer's settings;
    ``override`` sets fields otherwise (the throughput benchmark's steps and batch)."""
    g = gan_params
    return TrainConfig(**{
        "steps": int(g["steps"]), "batch": int(g["batch"]), "lr_g": float(g["lr_g"]), "lr_d": float(g["lr_d"]),
        "betas": tuple(float(beta) for beta in g["betas"]), "lr_decay": float(g["lr_decay"]), "loss": g["loss"],
        "label_smoothing": float(g["label_smoothing"]), "r1_gamma": float(g["r1_gamma"]),
        "diffaugment": g["diffaugment"] or "", "ema_decay": float(g["ema_decay"]),
        "precision": runtime["precision"], "channels_last": runtime["channels_last"],
        "cuda_graphs": runtime["cuda_graphs"], "log_every": int(g["log_every"]),
        "collapse_patience": int(g["collapse_patience"]), **override})


def fid_monitor(extractor_file: Path, gan_params: dict, trainer: Trainer, data, val: Split, runtime: dict,
                seed: int) -> FidMonitor:
    """The domain-FID check against the val split, with the extractor trained on this very train split."""
    extractor = torch.load(extractor_file, map_location="cpu", weights_only=True)
    if extractor.get("data") != data.data_hash:
        raise SystemExit("train_gan: the domain extractor was trained on other data; run the extractor stage")
    return FidMonitor(extractor, val, int(gan_params["fid_samples"]), trainer.gan.z_dim,
                      bool(trainer.gan.num_classes), runtime["device"], seed)


def discard_after(staged: Path, step: int, steps_per_epoch: int) -> None:
    """Before a resume from ``step``: delete the staged files an uninterrupted run has not made by then (epoch
    grids after it, the final grid, samples and summary of a run that got further). The logs go too; they are
    written again from the checkpoint's history, never appended to."""
    for path in sorted(staged.rglob("*")):
        name = path.name.removeprefix("epoch_").removesuffix(".png")
        kept = path.parent == staged / outputs.GRIDS and name.isdigit() and int(name) * steps_per_epoch <= step
        if path.is_file() and not kept:
            path.unlink()


def resume(trainer: Trainer, monitor: FidMonitor | None, checkpoint: Path, key: str, writer: bool) -> int:
    """Load the last checkpoint (or the one before, if the last is damaged) when it is this run's; returns
    the step resumed from (0: starting over)."""
    state, found = load_checkpoint(checkpoint, rename=writer)
    if state is None:
        return 0
    if state["run_key"] == key:   # the same params (steps included): never past this run's last step
        trainer.load_state_dict(state)
        if monitor and state.get("fid_monitor"):
            monitor.load_state_dict(state["fid_monitor"])
        if writer:
            print(f"train_gan: resuming from step {trainer.step} of {trainer.cfg.steps} ({found})")
        return trainer.step
    if writer:
        print(f"train_gan: {found} is from other params, data, code or FID inputs; starting over")
    return 0


def train(args, runtime: dict, rank: int, world: int) -> dict:
    params = args.params
    gan_params, seed, writer = params["gan"], int(params["base"]["seed"]), rank == 0
    model_dir, reports = args.path(params["paths"]["gan_model"]), args.path(params["paths"]["gan_reports"])
    prepared = args.path(params["paths"]["prepared"])
    data = load_split(prepared, "train")
    trainer = build_trainer(gan_params, runtime, data, seed)
    fid, monitor = "", None
    if int(gan_params["fid_every"]):   # every process: the key must be the same in all of them
        extractor_file, val = args.path(params["paths"]["extractor"]) / outputs.EXTRACTOR, load_split(prepared, "val")
        fid = fid_inputs(extractor_file, val)
        monitor = fid_monitor(extractor_file, gan_params, trainer, data, val, runtime, seed) if writer else None
    key = run_key(gan_params, runtime, seed, data.data_hash, world, code_hash(), fid)
    work = args.path(params["paths"]["gan_work"])
    staged = work / "reports"    # paths.gan_reports as it grows; published when the run ends
    resumed_from = resume(trainer, monitor, work / outputs.CHECKPOINT, key, writer)
    if writer and not resumed_from:
        shutil.rmtree(staged, ignore_errors=True)
    elif writer:   # files staged after the checkpoint (a run killed later) are made again, or not at all
        discard_after(staged, resumed_from, trainer.steps_per_epoch)
    if writer:
        (staged / outputs.GRIDS).mkdir(parents=True, exist_ok=True)
        model_dir.mkdir(parents=True, exist_ok=True)
    run = TrainingRun(trainer, gan_params, staged, work / outputs.CHECKPOINT, key, data.classes, monitor, writer)
    with stage_run("train_gan", params, args.root, {"base": params["base"], "gan": gan_params}) if writer \
            else nullcontext() as ml:
        run.ml = ml
        if ml:
            ml.log_params({"gan.resolution": trainer.gan.resolution, "gan.resolved_precision": runtime["precision"],
                           "gan.resolved_device": str(runtime["device"]), "gan.world_size": world,
                           "gan.resumed_from_step": resumed_from})
            run.pending.extend(trainer.history)  # curves before a resume, so this run holds all of them
            if monitor:
                run.pending.extend({"step": row["step"], "fid_domain": row["fid_domain"]} for row in monitor.history)
        started = time.perf_counter()
        try:
            trainer.run(trainer.cfg.steps, run.callbacks(), int(gan_params["checkpoint_every"]))
        except DivergenceError as e:
            run.bar.close()
            if writer:
                run.write_logs()
                publish(staged, reports)   # the curves that show what went wrong, where they always are
                run.flush_metrics()
            raise SystemExit(f"train_gan: stopped: {e}") from e
        run.bar.close()
        seconds = time.perf_counter() - started  # timings go to the log and MLflow, never into summary.json (an out)
        if not writer:
            return {}
        summary = finish(run, data, runtime, world, model_dir, reports)
        images_per_second = round((trainer.step - resumed_from) * trainer.cfg.batch / seconds, 1) if seconds else 0.0
        summary["resumed_from_step"] = resumed_from      # returned and logged, not written
        if ml and trainer.step > resumed_from:
            ml.log_metrics({"train_seconds": seconds, "train_images_per_second": images_per_second})
    print(f"train_gan: {trainer.step} steps ({summary['epochs']} epochs) on {summary['device']} "
          f"[{summary['precision']}], {images_per_second} img/s -> {model_dir}")
    return summary


def publish(staged: Path, reports: Path) -> None:
    """paths.gan_reports becomes a copy of the staged reports (the checkpoint stays in paths.gan_work)."""
    shutil.rmtree(reports, ignore_errors=True)
    shutil.copytree(staged, reports)


def finish(run: TrainingRun, data, runtime: dict, world: int, model_dir: Path, published: Path) -> dict:
    """generator.pt (the lowest-FID EMA generator when FID is checked, else the last), the final grids, the
    logs and summary.json, published to paths.gan_reports; their MLflow artifacts. Returns the summary."""
    trainer, monitor, reports = run.trainer, run.monitor, run.reports
    if monitor and (not monitor.history or monitor.history[-1]["step"] != trainer.step):
        run.pending.append({"step": trainer.step, "fid_domain": monitor.check(trainer, data.classes)})
    gen_state = monitor.best["generator"] if monitor else generator_state(trainer, data.classes)
    save_torch(model_dir / outputs.GENERATOR, gen_state)
    if monitor:
        write_log(reports / outputs.FID_LOG, monitor.history, FID_COLUMNS)
    # checkpoint.pt holds the final training state (the last window always ends at cfg.steps)
    grid = trainer.grid_images(load_generator(gen_state, runtime["device"]))
    finals = [reports / outputs.FINAL_GRID]
    save_png(finals[0], tile(grid, run.grid_cols))
    for label, name in enumerate(data.classes if trainer.gan.num_classes else []):
        finals.append(reports / outputs.class_samples(name))
        save_png(finals[-1], tile(grid[trainer.fixed_y == label], run.grid_cols))
    write_log(reports / outputs.LOSSES, trainer.history)
    last = trainer.history[-1] if trainer.history else {}
    summary = {"steps": trainer.step, "epochs": round(trainer.step / trainer.steps_per_epoch, 2),
               "train_images": len(data.images), "resolution": trainer.gan.resolution,
               "num_classes": trainer.gan.num_classes, "classes": data.classes, "device": str(runtime["device"]),
               "precision": runtime["precision"], "cuda_graphs": trainer.graph_mode,  # the reason: log, MLflow
               "world_size": world, "final": {k: round(last[k], 5) for k in METRICS if k in last},
               "generator_step": gen_state["step"],
               "fid_domain_best": round(monitor.best["fid"], 5) if monitor else None,
               "fid_domain_last": round(monitor.history[-1]["fid_domain"], 5) if monitor else None}
    write_json(reports / outputs.SUMMARY, summary)  # a DVC out: what the inputs decide, nothing else
    publish(reports, published)
    if run.ml:
        run.flush_metrics()
        run.ml.log_param("gan.resolved_cuda_graphs", trainer.graph_status)
        for path in [*finals, reports / outputs.LOSSES, reports / outputs.SUMMARY] + ([reports / outputs.FID_LOG] if monitor else []):
            run.ml.log_artifact(str(path))
    return summary


if __name__ == "__main__":
    main()
