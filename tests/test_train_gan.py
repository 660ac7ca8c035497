"""train_gan stage end to end on a small prepared demo set: outputs, MLflow, resume after a kill (and what it
publishes), the run key, torchrun."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import stage_args, tiny_params
from dcgan.models import load_generator
from dcgan.train import DivergenceError
from pipeline import prepare, train_extractor, train_gan

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(width=0.25, steps=12, batch=8, log_every=3, checkpoint_every=6, grid_every=2, fid_every=0)


@pytest.fixture
def prepared(project, demo_archive):
    """A project with the demo archive prepared at 32x32 and a tiny, fast GAN in its params.yaml."""
    tiny_params(project, demo_archive, gan=FAST)
    prepare.main(stage_args(project))
    return project


def env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}


def log_steps(project):
    with open(project / "reports/gan/losses.csv", newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def test_train_gan_stage_outputs_and_mlflow(prepared):
    summary = train_gan.main(stage_args(prepared))
    assert summary["steps"] == 12 and summary["resolution"] == 32 and summary["classes"] == ["normal", "pneumonia"]
    state = torch.load(prepared / "models/gan/generator.pt", weights_only=True)
    g = load_generator(state)
    assert g.sample(3, label=1).shape == (3, 1, 32, 32)
    assert state["fixed_z"].shape == (64, 100) and state["step"] == 12
    ckpt = torch.load(prepared / "checkpoints/gan/checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 12 and ckpt["fixed_z"].equal(state["fixed_z"])
    reports = prepared / "reports/gan"
    assert log_steps(prepared) == [3, 6, 9, 12]
    assert (reports / "samples_normal.png").is_file() and (reports / "samples_pneumonia.png").is_file()
    train_images = summary["train_images"]
    epochs = 12 // -(-train_images // 8)
    assert len(list((reports / "grids").glob("epoch_*.png"))) == epochs // 2
    written = json.loads((reports / "summary.json").read_text())
    assert written["steps"] == 12
    # DVC outs hold what the inputs decide: no wall-clock figures, no run history (those go to MLflow)
    assert not {"seconds", "images_per_second", "resumed_from_step"} & set(written)
    assert "images_per_second" not in (reports / "losses.csv").read_text().splitlines()[0]
    assert all("images_per_second" not in row for row in ckpt["history"])

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{prepared / 'mlflow.db'}")
    exp = client.get_experiment_by_name("medaug")
    run = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("stage") == "train_gan"][0]
    curve = client.get_metric_history(run.info.run_id, "loss_d")
    assert [m.step for m in sorted(curve, key=lambda m: m.step)] == [3, 6, 9, 12]
    for key in ("loss_g", "d_real", "d_fake", "lr_g", "lr_d", "images_per_second"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 4
    assert run.data.params["gan.loss"] == "bce"
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"samples_normal.png", "losses.csv", "summary.json"} <= arts


def test_num_classes_must_match_the_data(prepared):
    with pytest.raises(SystemExit, match="num_classes=3"):
        train_gan.main(stage_args(prepared, "gan.num_classes=3"))


def test_unconditional_and_restart_on_any_param_change(prepared, capsys):
    train_gan.main(stage_args(prepared, "gan.num_classes=0", "gan.steps=5"))
    assert not (prepared / "reports/gan/samples_normal.png").exists()
    # more steps train afresh: the finished run closed a log window at step 5, an uninterrupted one does not
    more = train_gan.main(stage_args(prepared, "gan.num_classes=0", "gan.steps=9"))
    assert more["resumed_from_step"] == 0 and more["steps"] == 9 and "starting over" in capsys.readouterr().out
    assert log_steps(prepared) == [3, 6, 9]
    other = train_gan.main(stage_args(prepared, "gan.num_classes=0", "gan.steps=9", "gan.loss=hinge"))
    assert other["resumed_from_step"] == 0 and "starting over" in capsys.readouterr().out


def test_the_fid_checks_inputs_are_in_the_run_key(prepared, capsys):
    """The FID checks choose generator.pt and write fid.csv: another extractor file, or other val images or
    labels, train afresh instead of restoring checks scored against the old ones."""
    extractor = ("extractor.width=4", "extractor.dim=16", "extractor.batch=16", "mlflow.enabled=false")
    fid = ("gan.steps=6", "gan.fid_every=1", "gan.fid_samples=20", "mlflow.enabled=false")
    train_extractor.main(stage_args(prepared, *extractor, "extractor.steps=4"))
    assert train_gan.main(stage_args(prepared, *fid))["resumed_from_step"] == 0
    assert train_gan.main(stage_args(prepared, *fid))["resumed_from_step"] == 6   # same inputs: the finished run
    train_extractor.main(stage_args(prepared, *extractor, "extractor.steps=6"))
    capsys.readouterr()
    assert train_gan.main(stage_args(prepared, *fid))["resumed_from_step"] == 0
    assert "starting over" in capsys.readouterr().out
    index = prepared / "data/prepared/index.csv"
    with open(index, newline="") as f:
        rows = list(csv.DictReader(f))
    val = next(row for row in rows if row["split"] == "val")
    val["label"] = str(1 - int(val["label"]))   # the train split, and so the extractor's check, stay the same
    with open(index, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert train_gan.main(stage_args(prepared, *fid))["resumed_from_step"] == 0


def test_killed_run_resumes_and_finishes_the_planned_steps(prepared):
    steps = 400
    args = [sys.executable, "-m", "pipeline.train_gan", *stage_args(
        prepared, f"gan.steps={steps}", "gan.checkpoint_every=20", "gan.log_every=10", "mlflow.enabled=false")]
    proc = subprocess.Popen(args, cwd=prepared, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = prepared / "checkpoints/gan/checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    killed_at = torch.load(ckpt, weights_only=True)["step"]
    assert 0 < killed_at < steps
    assert not (prepared / "models/gan/generator.pt").exists()
    assert not list(ckpt.parent.glob(".*.tmp"))  # or if a temp file was left, it was not renamed in
    # `dvc repro` deletes the stage's outs before running it again; the checkpoint is not one of them
    for out in ("models/gan", "reports/gan"):
        shutil.rmtree(prepared / out, ignore_errors=True)

    summary = train_gan.main(stage_args(prepared, f"gan.steps={steps}", "gan.checkpoint_every=20",
                                        "gan.log_every=10", "mlflow.enabled=false"))
    assert summary["resumed_from_step"] >= killed_at and summary["steps"] == steps
    assert torch.load(ckpt, weights_only=True)["step"] == steps
    assert load_generator(torch.load(prepared / "models/gan/generator.pt", weights_only=True)).sample(
        2, label=0).shape == (2, 1, 32, 32)
    logged = log_steps(prepared)
    assert logged == sorted(set(logged)) and logged[-1] == steps  # one continuous curve


@pytest.mark.parametrize("damage", ["truncated", "zero_bytes", "not_a_checkpoint"])
def test_a_damaged_checkpoint_is_set_aside_and_training_resumes_from_the_previous_one(prepared, damage, recwarn):
    """12 steps with checkpoints at 6 and 12 leave checkpoint.pt (12) and checkpoint.prev.pt (6). Damage the
    last: the stage warns naming it, renames it aside, resumes from step 6 and finishes its 12 planned steps."""
    a = ("mlflow.enabled=false",)
    train_gan.main(stage_args(prepared, *a))
    ckpt, prev = prepared / "checkpoints/gan/checkpoint.pt", prepared / "checkpoints/gan/checkpoint.prev.pt"
    assert torch.load(prev, weights_only=True)["step"] == 6
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    elif damage == "zero_bytes":
        ckpt.write_bytes(b"")
    else:
        torch.save({"weights": torch.zeros(3)}, ckpt)
    summary = train_gan.main(stage_args(prepared, *a))
    assert summary["resumed_from_step"] == 6 and summary["steps"] == 12
    assert (prepared / "checkpoints/gan/checkpoint.pt.damaged").is_file()
    assert any("checkpoint.pt cannot be read" in str(w.message) and "checkpoint.pt.damaged" in str(w.message)
               for w in recwarn)
    assert torch.load(ckpt, weights_only=True)["step"] == 12


def test_a_resumed_run_drops_what_was_staged_after_its_checkpoint(prepared, monkeypatch):
    """A run that got past its checkpoint (here: finished, then checkpoint.pt lost) left epoch grids and final
    files staged. Resumed from step 6 and stopped at once, the stage publishes what an uninterrupted run has made
    by step 6: the epoch grids up to it and the curves from the checkpoint's history, nothing appended."""
    a = ("mlflow.enabled=false",)
    steps_per_epoch = -(-train_gan.main(stage_args(prepared, *a))["train_images"] // 8)
    work = prepared / "checkpoints/gan"
    (work / "checkpoint.pt").unlink()   # checkpoint.prev.pt (step 6) is the one left
    staged = {p.name for p in (work / "reports/grids").glob("epoch_*.png")}
    assert any(int(name[6:12]) * steps_per_epoch > 6 for name in staged)   # there is something to drop

    def diverge(trainer, *args, **kwargs):
        raise DivergenceError("diverged at once")

    monkeypatch.setattr(train_gan.Trainer, "run", diverge)
    with pytest.raises(SystemExit, match="diverged at once"):
        train_gan.main(stage_args(prepared, *a))
    reports = prepared / "reports/gan"
    published = {p.relative_to(reports).as_posix() for p in reports.rglob("*") if p.is_file()}
    grids = {f"grids/epoch_{e:06d}.png" for e in range(2, 6 // steps_per_epoch + 1, 2)}   # gan.grid_every=2
    assert published == grids | {"losses.csv"}
    assert log_steps(prepared) == [3, 6]


def test_with_both_checkpoints_damaged_training_starts_over(prepared, recwarn):
    train_gan.main(stage_args(prepared, "mlflow.enabled=false"))
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (prepared / "checkpoints/gan" / name).write_bytes(b"\x00" * 10)
    summary = train_gan.main(stage_args(prepared, "mlflow.enabled=false"))
    assert summary["resumed_from_step"] == 0 and summary["steps"] == 12
    assert sum("cannot be read" in str(w.message) for w in recwarn) == 2


def test_torchrun_two_cpu_processes(prepared):
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "pipeline.train_gan", *stage_args(prepared, "gan.steps=6", "gan.checkpoint_every=3")],
        cwd=prepared, env=env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("train_gan: 6 steps") == 1  # one writer
    # one writer: checkpoints at 3 and 6 (the last two kept), one generator
    kept = sorted(p.name for p in (prepared / "checkpoints/gan").glob("*.pt"))
    assert kept == ["checkpoint.prev.pt", "checkpoint.pt"]
    assert [p.name for p in (prepared / "models/gan").glob("*.pt")] == ["generator.pt"]
    assert torch.load(prepared / "checkpoints/gan/checkpoint.prev.pt", weights_only=True)["step"] == 3
    ckpt = torch.load(prepared / "checkpoints/gan/checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 6 and len(ckpt["rng"]["device"]) == 2
    assert not torch.equal(ckpt["rng"]["device"][0], ckpt["rng"]["device"][1])  # each process its own noise
    summary = json.loads((prepared / "reports/gan/summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 6
