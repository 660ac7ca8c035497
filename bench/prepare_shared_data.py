"""Prepare the real chest X-rays in ../shared/data and check the foundation issue's facts on them:
the Kermany folder prepares with nothing quarantined, class counts 1341/3875 and no patient in two
splits; both RG1 DICOMs prepare and the JPEG 2000 copy equals the uncompressed one (max abs diff 0);
the PneumoniaMNIST npz prepares. Uses the prepare stage itself (python -m pipeline.prepare -S ...).

    python bench/prepare_shared_data.py [--shared ../shared/data] [--smoke]

Prints the figures and writes bench/results/prepare_shared_data.json (--results elsewhere). Outputs go to
bench/work/shared/ (--work elsewhere). --smoke: the same on a generated miniature of ../shared/data (its
checks against the miniature's own counts), in a temporary folder.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _data import add_folder_args, folders, run_prepare, shared_miniature  # noqa: E402  (bench/ is on sys.path)

# the published counts the checks compare with
KERMANY_COUNTS = {"NORMAL": 1341, "PNEUMONIA": 3875}
PNEUMONIAMNIST_IMAGES = 5232


def run(source: Path, out: Path, *extra: str) -> dict:
    summary, seconds = run_prepare(source, out, *extra)
    summary["wall_seconds"] = round(seconds, 1)
    return summary


def patients_in_two_splits(out: Path) -> int:
    seen = defaultdict(set)
    with open(out / "index.csv", newline="") as f:
        for r in csv.DictReader(f):
            seen[r["patient_id"]].add(r["split"])
    return sum(len(s) > 1 for s in seen.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(ROOT.parent / "shared/data"))
    add_folder_args(ap)
    args = ap.parse_args()
    with folders(args):
        check(args)


def check(args):
    expected = {"kermany_counts": KERMANY_COUNTS, "pneumoniamnist_images": PNEUMONIAMNIST_IMAGES}
    extra = []
    if args.smoke:
        args.shared = args.work / "miniature"
        made = shared_miniature(args.shared)
        expected = {"kermany_counts": made["kermany_class_counts"], "pneumoniamnist_images": made["pneumoniamnist_images"]}
        extra = ["prepare.workers=1"]
    shared = Path(args.shared)
    if not shared.is_dir():
        sys.exit(f"{shared} not found")
    work = args.work / "shared"
    work.mkdir(parents=True, exist_ok=True)
    res = {}

    k = run(shared / "kermany_224_train", work / "kermany", *extra)
    res["kermany"] = {k2: k[k2] for k2 in ("found", "prepared", "quarantined", "class_counts", "patients",
                                           "patient_id_from", "duplicate_groups", "splits", "wall_seconds")}
    res["kermany"]["patients_in_two_splits"] = patients_in_two_splits(work / "kermany")

    # The two RG1 files: put each in a class folder of its own copy so both prepare as one source.
    rg1 = work / "rg1_src"
    shutil.rmtree(rg1, ignore_errors=True)
    (rg1 / "chest").mkdir(parents=True)
    for f in sorted((shared / "dicom").glob("RG1_*.dcm")):
        shutil.copy2(f, rg1 / "chest" / f.name)
    # a mapping given with -S merges into the one in params (as with dvc exp run -S): name every split
    r = run(rg1, work / "rg1", "prepare.split={train: 1.0, val: 0, test: 0}", "prepare.workers=1")
    images = np.load(work / "rg1/images.npy").astype(np.float32)
    with open(work / "rg1/index.csv", newline="") as f:
        rows = {Path(x["path"]).name: x for x in csv.DictReader(f)}
    a, b = rows["RG1_UNCR_chest_CR.dcm"], rows["RG1_J2KR_chest_CR.dcm"]
    res["rg1"] = {"prepared": r["prepared"], "quarantined": r["quarantined"],
                  "transfer_syntaxes": [a["transfer_syntax"], b["transfer_syntax"]],
                  "photometric": a["photometric"], "voi": a["voi"], "orig_size": [a["orig_height"], a["orig_width"]],
                  "max_abs_difference_j2k_vs_uncompressed": float(np.abs(images[int(a["row"])] - images[int(b["row"])]).max()),
                  "mean_pixel": round(float(images[int(a["row"])].mean()), 4)}

    m = run(shared / "pneumoniamnist_28_trainval.npz", work / "pneumoniamnist", "prepare.size=28", *extra)
    res["pneumoniamnist"] = {k2: m[k2] for k2 in ("found", "prepared", "quarantined", "class_counts", "split_from",
                                                   "splits", "warnings", "wall_seconds")}

    checks = {
        "kermany_no_quarantine": res["kermany"]["quarantined"] == 0,
        "kermany_counts_as_published": res["kermany"]["class_counts"] == expected["kermany_counts"],
        "kermany_no_patient_in_two_splits": res["kermany"]["patients_in_two_splits"] == 0,
        "rg1_both_prepared": res["rg1"]["prepared"] == 2,
        "rg1_j2k_equals_uncompressed": res["rg1"]["max_abs_difference_j2k_vs_uncompressed"] == 0.0,
        "pneumoniamnist_all_prepared": res["pneumoniamnist"]["prepared"] == expected["pneumoniamnist_images"],
    }
    report = {"benchmark": "prepare_shared_data", "smoke": args.smoke, "expected": expected, "results": res,
              "checks": checks, "all_pass": all(checks.values())}
    out = args.results / "prepare_shared_data.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"checks": checks, "kermany": {x: res["kermany"][x] for x in
                                                    ("prepared", "quarantined", "class_counts", "patients",
                                                     "duplicate_groups", "patients_in_two_splits", "wall_seconds")},
                      "rg1": res["rg1"]}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
