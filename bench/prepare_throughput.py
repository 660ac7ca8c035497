"""Images per second preparing 1024x1024 (--side) 12-bit DICOMs (uncompressed and JPEG 2000 lossless) on all cores:
our prepare path against (a) MONAI LoadImage(PydicomReader) + ScaleIntensity + Resize and (b) the floor,
bare ``pydicom.dcmread(path).pixel_array``. Same files, same process pool size, files in the page cache,
and the same worker environment for all three (imaging.ingest.single_threaded_children: one BLAS thread,
glibc malloc keeping large buffers on its heap), the one the prepare stage gives its workers.

    python bench/prepare_throughput.py [--n 64] [--workers 0] [--repeats 3] [--side 1024] [--smoke]

Prints a table and writes bench/results/prepare_throughput.json (--results elsewhere); the generated files are
kept in bench/work/prepare_throughput/<side>/ (--work elsewhere). --smoke: 2 files of 128x128 a syntax, one
worker, one repeat, in a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imaging.dicom_write import encode, grey_dataset  # noqa: E402
from imaging.ingest import single_threaded_children  # noqa: E402
from imaging.phantoms import Anatomy, chest_phantom  # noqa: E402
from _data import add_folder_args, folders  # noqa: E402  (bench/ is on sys.path when run as a script)

SIZE = 64
_monai = None


def make_files(work: Path, n: int, side: int = 1024) -> dict[str, list[Path]]:
    rng = np.random.default_rng(0)
    out = {"uncompressed": [], "jpeg2000": []}
    for kind in out:
        (work / kind).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        plain, j2k = work / "uncompressed" / f"{i:04d}.dcm", work / "jpeg2000" / f"{i:04d}.dcm"
        if not (plain.exists() and j2k.exists()):
            img = (chest_phantom(rng, side, Anatomy.sample(rng), i % 2 == 1) * 4095).astype(np.uint16)
            attrs = dict(PatientID=f"B{i}", WindowCenter=2048, WindowWidth=4096)
            grey_dataset(img, bits_stored=12, **attrs).save_as(plain, enforce_file_format=True)
            encode(grey_dataset(img, bits_stored=12, **attrs), "jpeg2000").save_as(j2k, enforce_file_format=True)
        out["uncompressed"].append(plain)
        out["jpeg2000"].append(j2k)
    return out


def ours(path: str):
    from imaging.ingest import ingest_file
    from imaging.pixels import PixelConfig
    from imaging.sources import Item

    r = ingest_file(Item(Path(path), path), PixelConfig(size=SIZE))
    assert not isinstance(r, tuple), r
    return r.image.shape


def monai_baseline(path: str):
    global _monai
    if _monai is None:
        import torch
        from monai.data import PydicomReader
        from monai.transforms import Compose, LoadImage, Resize, ScaleIntensity

        torch.set_num_threads(1)
        _monai = Compose([LoadImage(reader=PydicomReader(), image_only=True, ensure_channel_first=True),
                          ScaleIntensity(minv=-1.0, maxv=1.0), Resize((SIZE, SIZE))])
    return tuple(_monai(path).shape)


def floor(path: str):
    import pydicom

    return pydicom.dcmread(path).pixel_array.shape


METHODS = {"ours": ours, "monai_baseline": monai_baseline, "floor_pydicom_pixel_array": floor}


def measure(fn, files: list[Path], workers: int, repeats: int) -> float:
    paths = [str(p) for p in files]
    with single_threaded_children(), mp.get_context("spawn").Pool(workers) as pool:
        pool.map(fn, paths[: workers * 2], chunksize=1)  # warm-up: imports, transforms, page cache
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            pool.map(fn, paths, chunksize=max(1, len(paths) // (workers * 8)))
            best = min(best, time.perf_counter() - t)
    return len(paths) / best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--workers", type=int, default=0, help="0: all cores")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--side", type=int, default=1024, help="side of the generated DICOMs in pixels")
    add_folder_args(ap)
    args = ap.parse_args()
    if args.smoke:
        args.n, args.workers, args.repeats, args.side = 2, 1, 1, 128
    with folders(args):
        run(args)


def run(args):
    workers = args.workers or len(os.sched_getaffinity(0))
    files = make_files(args.work / "prepare_throughput" / str(args.side), args.n, args.side)
    results = {}
    for kind, fs in files.items():
        results[kind] = {name: round(measure(fn, fs, workers, args.repeats), 1) for name, fn in METHODS.items()}
        r = results[kind]
        r["ours_vs_baseline"] = round(r["ours"] / r["monai_baseline"], 2)
        r["ours_vs_floor"] = round(r["ours"] / r["floor_pydicom_pixel_array"], 2)
    report = {"benchmark": "prepare_throughput", "smoke": args.smoke, "images": args.n,
              "image": f"{args.side}x{args.side}, 12 bits stored",
              "output_size": SIZE, "workers": workers,
              "worker_env": "imaging.ingest.single_threaded_children (all methods)", "repeats": args.repeats, "statistic": "best of repeats",
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "python": platform.python_version()},
              "targets": {"ours_vs_baseline": 3.0, "ours_vs_floor": 0.8}, "images_per_second": results}
    print(f"{'':14s} {'ours':>8s} {'MONAI':>8s} {'floor':>8s} {'vs MONAI':>9s} {'vs floor':>9s}   (images/s, {workers} workers)")
    for kind, r in results.items():
        print(f"{kind:14s} {r['ours']:8.1f} {r['monai_baseline']:8.1f} {r['floor_pydicom_pixel_array']:8.1f}"
              f" {r['ours_vs_baseline']:8.2f}x {r['ours_vs_floor']:8.2f}x")
    out = args.results / "prepare_throughput.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
