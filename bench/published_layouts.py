"""Public datasets laid out as they are downloaded, read by prepare and inspect (issue 15's figures).

1. Kermany: ``chest_xray/train/{NORMAL,PNEUMONIA}`` from ../shared/data/kermany_224_train and
   ``chest_xray/test/{NORMAL,PNEUMONIA}`` from ../shared/eval/kermany_224_test (symlinks, built outside the
   repository, under --work). ``python -m pipeline.inspect`` on it is timed (a fresh process, as a user runs
   it); then ``pipeline.prepare`` checks the classes, that the test split is exactly the 624 official test
   images (234/390) and that validation is carved from train by patient.
2. NIH ChestX-ray14: the two real NIH PNGs in ../shared/eval/png as ``images_001/images/<Image Index>`` with a
   ``Data_Entry_2017.csv`` in the published columns, prepared through that CSV.
3. 16-bit PNGs holding 12-bit values (generated phantoms) prepare to images that use most of [-1, 1], and the
   low-contrast guard fires on a deliberately mis-windowed DICOM set.

    python bench/published_layouts.py [--work DIR] [--smoke]

``--smoke`` builds the same layouts with a few generated images instead (seconds; a test runs it). Prints
the figures and writes <results>/published_layouts.json (default bench/results; smoke: a temporary folder). The
shared images are only linked, never copied into the repository.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "bench"))
from _data import add_folder_args, folders, run_prepare  # noqa: E402

NIH_COLUMNS = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
               "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"]


def link_tree(src: Path, dst: Path) -> int:
    """dst/<class>/<file> -> src/<class>/<file>, one symlink a file; returns the count."""
    n = 0
    for cls in sorted(p for p in src.iterdir() if p.is_dir()):
        (dst / cls.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(cls.iterdir()):
            if f.is_file() and not f.name.startswith("."):
                os.symlink(f.resolve(), dst / cls.name / f.name)
                n += 1
    return n


def build_kermany(shared: Path, work: Path) -> Path:
    """The Kermany download layout from the shared train and test folders; returns chest_xray/."""
    root = work / "kermany" / "chest_xray"
    if root.exists():
        shutil.rmtree(root)
    link_tree(shared / "data/kermany_224_train", root / "train")
    link_tree(shared / "eval/kermany_224_test", root / "test")
    return root


def build_nih(shared: Path, work: Path) -> Path:
    """NIH ChestX-ray14's layout (images_001/images/<Image Index>, Data_Entry_2017.csv) for the shared PNGs."""
    root = work / "nih"
    if root.exists():
        shutil.rmtree(root)
    (root / "images_001/images").mkdir(parents=True)
    rows = []
    for f in sorted((shared / "eval/png").glob("nih_cxr14_*.png")):
        name = f.name[len("nih_cxr14_"):]
        os.symlink(f.resolve(), root / "images_001/images" / name)
        pid = str(int(name.split("_")[0]))
        # 00000001_000.png is Cardiomegaly in Data_Entry_2017.csv; the other row's finding is a placeholder
        finding = "Cardiomegaly" if name == "00000001_000.png" else "No Finding"
        rows.append([name, finding, "0", pid, "58", "M", "PA", "2048", "2500", "0.143", "0.143"])
    with open(root / "Data_Entry_2017.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([NIH_COLUMNS, *rows])
    return root


def build_generated_kermany(work: Path, per_class: int = 6) -> Path:
    """--smoke: the Kermany layout with a few generated JPEGs (real names, nesting)."""
    from PIL import Image

    from imaging.phantoms import Anatomy, chest_phantom

    rng = np.random.default_rng(0)
    root = work / "kermany" / "chest_xray"
    if root.exists():
        shutil.rmtree(root)
    for split, offset in (("train", 0), ("test", 100)):
        for cls in ("NORMAL", "PNEUMONIA"):
            (root / split / cls).mkdir(parents=True)
            for p in range(per_class if split == "train" else 3):
                img = (chest_phantom(rng, 64, Anatomy.sample(rng), cls == "PNEUMONIA") * 255).astype(np.uint8)
                name = f"person{offset + p}_bacteria_{p}.jpeg" if cls == "PNEUMONIA" else f"IM-{offset + p:04d}-0001.jpeg"
                Image.fromarray(img).save(root / split / cls / name)
    return root


def build_generated_nih(work: Path) -> Path:
    from PIL import Image

    from imaging.phantoms import Anatomy, chest_phantom

    rng = np.random.default_rng(1)
    root = work / "nih"
    if root.exists():
        shutil.rmtree(root)
    (root / "images_001/images").mkdir(parents=True)
    rows = []
    for p, finding in enumerate(["Cardiomegaly", "No Finding", "Pneumonia|Effusion", "No Finding"], start=1):
        name = f"{p:08d}_000.png"
        img = (chest_phantom(rng, 64, Anatomy.sample(rng), "Pneumonia" in finding) * 255).astype(np.uint8)
        Image.fromarray(img).save(root / "images_001/images" / name)
        rows.append([name, finding, "0", str(p), "50", "F", "PA", "2048", "2500", "0.143", "0.143"])
    with open(root / "Data_Entry_2017.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([NIH_COLUMNS, *rows])
    return root


def twelve_bit_sets(work: Path, n: int) -> tuple[Path, Path]:
    """16-bit PNGs holding 12-bit phantoms, and the same values as DICOMs windowed over 0..65535."""
    from PIL import Image

    from imaging.dicom_write import grey_dataset
    from imaging.phantoms import Anatomy, chest_phantom

    rng = np.random.default_rng(2)
    png, bad = work / "png16", work / "miswindowed"
    for d in (png, bad):
        if d.exists():
            shutil.rmtree(d)
    for cls in ("normal", "pneumonia"):
        (png / cls).mkdir(parents=True)
        (bad / cls).mkdir(parents=True)
        for i in range(n):
            vals = (chest_phantom(rng, 128, Anatomy.sample(rng), cls == "pneumonia") * 4095).astype(np.uint16)
            Image.fromarray(vals).save(png / cls / f"p{i:03d}.png")  # mode I;16
            grey_dataset(vals, bits_stored=16, PatientID=f"{cls}{i}", WindowCenter=32768, WindowWidth=65536
                         ).save_as(bad / cls / f"p{i:03d}.dcm", enforce_file_format=True)
    return png, bad


def timed_inspect(source: Path, *extra: str) -> tuple[str, float]:
    """pipeline.inspect in a fresh process, as a user runs it (interpreter start and imports included)."""
    cmd = [sys.executable, "-m", "pipeline.inspect", "--params", str(ROOT / "params.yaml"), "-S", f"data.source={source}"]
    for e in extra:
        cmd += ["-S", e]
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - t
    if res.returncode:
        raise SystemExit(f"inspect failed:\n{res.stdout}\n{res.stderr}")
    return res.stdout, seconds


def test_names(out: Path) -> list[str]:
    with open(out / "index.csv", newline="") as fh:
        return sorted(r["path"] for r in csv.DictReader(fh) if r["split"] == "test")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"), help="folder holding data/ and eval/")
    ap.add_argument("--skip-prepare", action="store_true", help="only build the layouts and time inspect")
    add_folder_args(ap)  # --smoke: generated miniatures instead of the shared data; --work: the layouts go there
    args = ap.parse_args(argv)
    with folders(args):
        return run(args)


def run(args) -> dict:
    shared, work = Path(args.shared), args.work / "layouts"
    work.mkdir(parents=True, exist_ok=True)
    res: dict = {"smoke": args.smoke, "machine": f"{os.cpu_count()}-core CPU"}

    kermany = build_generated_kermany(work) if args.smoke else build_kermany(shared, work)
    runs = [timed_inspect(kermany) for _ in range(1 if args.smoke else 3)]
    text = runs[0][0]
    print(text)
    times = [round(t, 2) for _, t in runs]
    res["kermany"] = {"layout": "chest_xray/{train,test}/{NORMAL,PNEUMONIA}", "inspect_seconds": max(times),
                      "inspect_seconds_runs": times, "inspect_output": text.splitlines()}
    print(f"inspect on the Kermany layout (fresh process each, {len(times)} runs): {times} s")
    if not args.skip_prepare:
        s, secs = run_prepare(kermany, work / "kermany_prepared")
        official = sorted(f"test/{c}/{f.name}" for c in ("NORMAL", "PNEUMONIA")
                          for f in (kermany / "test" / c).iterdir())
        res["kermany"].update({
            "classes": s["classes"], "split_from": s["split_from"], "split_origin": s["split_origin"],
            "splits": s["splits"], "patients_in_several_published_splits": s["patients_in_several_published_splits"],
            "quarantined": s["quarantined"], "warnings": s.get("warnings", []),
            "test_is_exactly_the_published_test_folder": test_names(work / "kermany_prepared") == official,
            "prepare_seconds": round(secs, 1)})

        nih = build_generated_nih(work) if args.smoke else build_nih(shared, work)
        nih_params = ("data.labels=Data_Entry_2017.csv", "data.labels_key=Image Index",
                      "data.labels_column=Finding Labels", "data.patient_column=Patient ID",
                      "++data.label_map={Pneumonia: pneumonia, Cardiomegaly: cardiomegaly, No Finding: normal}")
        # two real images: too few patients to split (prepare stops on fewer patients than splits), and the
        # split is not what this checks, so all go to train
        s, _ = run_prepare(nih, work / "nih_prepared", *nih_params, "prepare.split={train: 1.0, val: 0, test: 0}")
        res["nih"] = {"params": list(nih_params), "prepared": s["prepared"], "quarantined": s["quarantined"],
                      "class_counts": s["class_counts"], "patient_id_from": s["patient_id_from"],
                      "labels_from": s["labels_from"], "voi": s["voi"]}

        png, bad = twelve_bit_sets(work, 4 if args.smoke else 40)
        s, _ = run_prepare(png, work / "png16_prepared")
        imgs = np.load(work / "png16_prepared/images.npy").astype(np.float32)
        res["png16_12bit"] = {"prepared": s["prepared"], "voi": s["voi"], "min": float(imgs.min()),
                              "max": float(imgs.max()),
                              "median_span": float(np.median(imgs.max(axis=(1, 2, 3)) - imgs.min(axis=(1, 2, 3)))),
                              "low_contrast_share": s["low_contrast_share"]}
        s, _ = run_prepare(bad, work / "miswindowed_prepared")
        res["miswindowed"] = {"voi": s["voi"], "low_contrast_share": s["low_contrast_share"],
                              "warnings": [w for w in s.get("warnings", []) if "prepare.voi" in w]}
    print(json.dumps({k: v for k, v in res.items() if k != "kermany"}, indent=1))
    out = args.results / "published_layouts.json"
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"-> {out}")
    return res


if __name__ == "__main__":
    main()
