"""The real-only CNN on the official Kermany test split, through the pipeline itself: the Kermany download
layout (bench/published_layouts.py) in a scratch copy of the project, params set for the real-only CNN arm
alone, then `dvc repro downstream_cnn_real@cnn-real-<fraction>-<seed>`. That stage depends on the prepared
set only (real-only arms read neither the synthetic set nor the extractor), so DVC runs prepare and the arm,
not the GAN. Epochs and threshold are chosen on the validation split carved from train; the published test
folder is read once.

    python bench/kermany_official_test.py [--epochs 12] [--width 16] [--collect] [--smoke]

--collect only reads the metrics of a scratch project already run (in --work).

Prints the arm's metrics next to the MedMNIST+ anchor on the same 624 test images (ResNet-18 at 64 px:
ROC AUC 0.943, accuracy 0.860) and writes <results>/kermany_official_test_cpu.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import published_layouts  # noqa: E402
from _data import add_folder_args, folders  # noqa: E402

ANCHOR = {"source": "MedMNIST+ (Doerrich et al. 2024), PneumoniaMNIST test split = the official Kermany test images",
          "model": "ResNet-18 at 64 px", "roc_auc": 0.943, "accuracy": 0.860}


def scratch_project(scratch: Path) -> None:
    """A copy of the project's tracked and untracked files (no .git, no bench/work), as a fresh git repo."""
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file() and not f.startswith("bench/work/"):
            (scratch / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, scratch / f)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "scratch"]):
        subprocess.run(cmd, cwd=scratch, check=True)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--arch", default="resnet10")
    ap.add_argument("--fraction", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--collect", action="store_true", help="only collect the results of a scratch project already run")
    add_folder_args(ap)
    args = ap.parse_args(argv)
    with folders(args):
        return run(args)


def run(args) -> dict:
    scratch = args.work / "kermany_official_project"
    arm = f"cnn-real-{float(args.fraction)}-{args.seed}"
    if args.collect:
        return collect(scratch, arm, args, seconds=None)
    layout_work = args.work / "layout"
    layout_work.mkdir(parents=True, exist_ok=True)
    source = (published_layouts.build_generated_kermany(layout_work, per_class=8) if args.smoke
              else published_layouts.build_kermany(Path(args.shared), layout_work))
    scratch_project(scratch)
    p = yaml.safe_load((scratch / "params.yaml").read_text())
    p["data"]["source"] = str(source)
    p["mlflow"]["enabled"] = False
    d = p["downstream"]
    d.update(arms={"cnn": {"real": ["real"], "synthetic": []}, "xgboost": {"real": [], "synthetic": []}},
             fractions=[args.fraction], seeds=[args.seed])
    d["cnn"].update(arch=args.arch, width=args.width, epochs=1 if args.smoke else args.epochs)
    if args.smoke:
        p["prepare"]["size"] = 32
        d["cnn"]["batch"] = 8
        d["bootstrap"]["samples"] = 20
    (scratch / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(scratch), "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
           # the stages run `python -m ...`: this interpreter's, whether or not its venv is on PATH
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "dvc", "repro", f"downstream_cnn_real@{arm}"], cwd=scratch, env=env,
                         check=True, capture_output=True, text=True).stdout
    print(out)
    ran = [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")]
    if ran != ["prepare", f"downstream_cnn_real@{arm}"]:
        raise SystemExit(f"expected dvc to run prepare and the arm only, it ran {ran}")
    return collect(scratch, arm, args, seconds=time.perf_counter() - t)


def collect(scratch: Path, arm: str, args, seconds: float | None) -> dict:
    p = yaml.safe_load((scratch / "params.yaml").read_text())
    d = p["downstream"]
    metrics = json.loads((scratch / f"metrics/downstream/{arm}.json").read_text())
    prepared = json.loads((scratch / "data/prepared/summary.json").read_text())
    res = {"smoke": args.smoke, "machine": f"{os.cpu_count()}-core CPU",
           "commands": [f"dvc repro downstream_cnn_real@{arm}"], "stages_run": ["prepare", f"downstream_cnn_real@{arm}"],
           "settings": {"data.source": "chest_xray/{train,test}/{NORMAL,PNEUMONIA} (Kermany download layout)",
                        "prepare.size": p["prepare"]["size"], "downstream.cnn": d["cnn"]},
           "split": {"split_from": prepared["split_from"], "splits": prepared["splits"]},
           "arm": metrics, "anchor": ANCHOR, "wall_seconds": round(seconds) if seconds else None}
    m, ci = metrics.get("metrics", {}), metrics.get("ci95", {})
    print(f"{arm} on the official test split ({prepared['splits']['test']['images']} images): "
          f"ROC AUC {m.get('roc_auc', float('nan')):.3f} (95% CI {ci.get('roc_auc')}), "
          f"accuracy {m.get('accuracy', float('nan')):.3f} (95% CI {ci.get('accuracy')}); "
          f"anchor {ANCHOR['model']}: AUC {ANCHOR['roc_auc']}, accuracy {ANCHOR['accuracy']}")
    out = args.results / "kermany_official_test_cpu.json"
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"-> {out}")
    return res


if __name__ == "__main__":
    main()
