"""What the benchmarks share: the folders they write to, the real data in ../shared/data (the Kermany train
folder prepared by the prepare stage itself into <work>/shared/kermany[<size>] on first use, the
patient-level split included), and for ``--smoke`` a miniature of ../shared/data with generated pixels.

Every script takes ``--smoke``: the same code path in seconds on the miniature, with its figures and
intermediate files in a temporary folder (removed afterwards unless ``--results``/``--work`` name one), never
in bench/results/. ``tests/test_bench_smoke.py`` runs each script that way.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench/results"
WORK = ROOT / "bench/work"


def add_folder_args(ap: argparse.ArgumentParser) -> None:
    """``--smoke``, ``--results`` and ``--work``, the same in every script."""
    ap.add_argument("--smoke", action="store_true",
                    help="a few seconds of the same code path on tiny generated data, written to a temporary "
                         "folder (checks that the benchmark runs; its figures mean nothing)")
    ap.add_argument("--results", type=Path, default=None,
                    help=f"folder for the figures (default {RESULTS.relative_to(ROOT)}; with --smoke a temporary one)")
    ap.add_argument("--work", type=Path, default=None,
                    help=f"folder for intermediate files (default {WORK.relative_to(ROOT)}; with --smoke a temporary one)")


@contextmanager
def folders(args: argparse.Namespace) -> Iterator[argparse.Namespace]:
    """Fill in ``args.results`` and ``args.work`` (both created). With ``--smoke`` the ones not given are in a
    temporary folder that is removed on exit; a smoke run never writes into bench/results/."""
    with ExitStack() as stack:
        if args.smoke:
            if args.results is None or args.work is None:
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-smoke-")))
                args.results = args.results or tmp / "results"
                args.work = args.work or tmp / "work"
            if args.results.resolve() == RESULTS:
                raise SystemExit(f"--smoke figures are not results: give --results a folder other than {RESULTS}")
        args.results = (args.results or RESULTS).resolve()
        args.work = (args.work or WORK).resolve()
        args.results.mkdir(parents=True, exist_ok=True)
        args.work.mkdir(parents=True, exist_ok=True)
        yield args


def kermany(shared: Path, size: int = 64, work: Path = WORK, workers: int = 0) -> Path:
    """The Kermany train folder in ``shared`` prepared at ``size`` px by the prepare stage (once), in ``work``."""
    out = Path(work) / f"shared/kermany{'' if size == 64 else size}"
    if not (out / "images.npy").exists():
        from pipeline import prepare
        prepare.main(["--params", str(ROOT / "params.yaml"), "-S", f"data.source={Path(shared) / 'kermany_224_train'}",
                      "-S", f"paths.prepared={out}", "-S", f"prepare.size={size}", "-S", f"prepare.workers={workers}",
                      "-S", "mlflow.enabled=false"])
    return out


def kermany_miniature(shared: Path, patients: int = 5, images: int = 2, side: int = 64, seed: int = 0) -> dict:
    """``shared``/kermany_224_train as published (class folders NORMAL and PNEUMONIA of 3-channel JPEGs with
    identical channels, several per patient, the patient in the file name: ``IM-0001-0001.jpeg``,
    ``NORMAL2-IM-0002-0001.jpeg``, ``person1_bacteria_1.jpeg``, ``person2_virus_3.jpeg``) with generated chest
    phantoms: ``patients`` patients per class, ``images`` images each. 5 x 2 gives every class images in
    every split. Returns the class counts."""
    from PIL import Image

    from imaging.phantoms import Anatomy, chest_phantom

    rng = np.random.default_rng(seed)
    root = Path(shared) / "kermany_224_train"
    counts, number = {}, 0
    for cls, pneumonia in (("NORMAL", False), ("PNEUMONIA", True)):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for p in range(1, patients + 1):
            anatomy = Anatomy.sample(rng)
            for i in range(1, images + 1):
                number += 1
                if pneumonia:
                    name = f"person{p}_{'bacteria' if p % 2 else 'virus'}_{number}.jpeg"
                else:
                    name = f"{'NORMAL2-' if p % 2 == 0 else ''}IM-{p:04d}-{i:04d}.jpeg"
                grey = (chest_phantom(rng, side, anatomy, pneumonia) * 255).astype(np.uint8)
                Image.fromarray(np.repeat(grey[..., None], 3, 2)).save(root / cls / name, quality=90)
        counts[cls] = patients * images
    return counts


def shared_miniature(shared: Path, seed: int = 0) -> dict:
    """All of ../shared/data in miniature: the Kermany folder (:func:`kermany_miniature`); dicom/RG1_UNCR_chest_CR.dcm
    and dicom/RG1_J2KR_chest_CR.dcm, one generated 15-bit MONOCHROME1 CR (non-square, with a window) uncompressed and
    as JPEG 2000 lossless; pneumoniamnist_28_trainval.npz with MedMNIST's keys (train/val images (n,28,28) uint8,
    labels (n,1)). Returns what was written, for the checks: class counts and the npz image count."""
    from imaging.dicom_write import encode, grey_dataset
    from imaging.phantoms import Anatomy, chest_phantom

    shared = Path(shared)
    rng = np.random.default_rng(seed)
    facts = {"kermany_class_counts": kermany_miniature(shared, seed=seed)}
    (shared / "dicom").mkdir(parents=True, exist_ok=True)
    stored = ((1 - chest_phantom(rng, 96, Anatomy.sample(rng), True, aspect=0.9)) * (2**15 - 1)).astype(np.uint16)
    attrs = dict(PatientID="RG1", WindowCenter=15000, WindowWidth=30000)
    for syntax, name in (("explicit", "RG1_UNCR_chest_CR.dcm"), ("jpeg2000", "RG1_J2KR_chest_CR.dcm")):
        ds = grey_dataset(stored, bits_stored=15, photometric="MONOCHROME1", sop_uid="1.2.826.0.1.3680043.8.498.1",
                          **attrs)
        encode(ds, syntax).save_as(shared / "dicom" / name, enforce_file_format=True)
    arrays = {}
    for split, n in (("train", 24), ("val", 6)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).astype(np.uint8).reshape(n, 1)
    np.savez(shared / "pneumoniamnist_28_trainval.npz", **arrays)
    facts["pneumoniamnist_images"] = sum(len(v) for k, v in arrays.items() if k.endswith("_images"))
    return facts


def run_prepare(source: Path, out: Path, *overrides: str) -> tuple[dict, float]:
    """The prepare stage on ``source`` into ``out`` (MLflow off, extra ``-S`` overrides); its summary and wall
    seconds (the stage writes no timings)."""
    import time

    from pipeline import prepare

    args = ["--params", str(ROOT / "params.yaml"), "-S", f"data.source={source}", "-S", f"paths.prepared={out}",
            "-S", "mlflow.enabled=false"]
    for o in overrides:
        args += ["-S", o]
    t = time.perf_counter()
    summary = prepare.main(args)
    return summary, time.perf_counter() - t


def dvc_env(project: Path) -> dict:
    """The environment for DVC commands in a study project: no analytics, the project's own site cache."""
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(project / ".dvc/tmp/site-cache")}


def experiment_baselines(project: Path) -> list[str]:
    """The commits a DVC project's experiments ran on (refs/exps/<2 hex>/<38 hex>/<name>), HEAD's among them or not:
    a project whose code was brought up to date since has its earlier experiments on the earlier baseline."""
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=project, check=True,
                          capture_output=True, text=True).stdout.split()
    return sorted({p[2] + p[3] for p in (r.split("/") for r in refs) if len(p) == 5 and len(p[2]) == 2
                   and len(p[3]) == 38})


def dvc_experiments(project: Path, env: dict) -> list[dict]:
    """The finished experiments of a DVC project, as `dvc exp show --json --rev <baseline>` lists them for each
    baseline with experiments (plain `dvc exp show` lists HEAD's only): each named rev without an error (its name,
    rev and data), with ``baseline``, the commit it was run on, added. Queued and running experiments are left
    out: they have no outputs yet."""
    out = []
    for baseline in experiment_baselines(project):
        shown = json.loads(subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json", "--rev", baseline],
                                          cwd=project, env=env, check=True, capture_output=True, text=True).stdout
                           or "[]")
        out += [{**rev, "baseline": row["rev"]} for row in shown for exp in (row.get("experiments") or [])
                if (exp.get("executor") or {}).get("state") in (None, "success")
                for rev in exp.get("revs", []) if rev.get("name") and not rev.get("error")]
    return out
