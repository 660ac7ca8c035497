"""Wall time of FID + KID (+ precision/recall) for 10,000 vs 10,000 images at 64x64 with the domain
extractor, through evaluation/fidelity.py (torch-fidelity), split into feature extraction and metrics.

    python bench/fidelity_speed.py [--n 10000] [--width 32] [--dim 256] [--prc] [--smoke]

The images are the Kermany train split at 64x64 (bench/work/shared/kermany, made from ../shared/data on
first use), drawn with repetition to 2 x n. Timing does not depend on the extractor's weights, so an
untrained extractor of the real-data size (extractor.width 32, dim 256) is used. Writes
bench/results/fidelity_speed_<device>.json (--results elsewhere). --smoke: 64 vs 64 images of a generated
miniature of the Kermany folder, a tiny extractor, precision/recall included, in a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluation import fidelity as fd  # noqa: E402
from evaluation import fidelity_stats as fs  # noqa: E402
from evaluation.features import DomainNet, ExtractorConfig, extractor_state  # noqa: E402
from pipeline.prepared import load_split  # noqa: E402
from pipeline.runtime import resolve_device  # noqa: E402
from _data import add_folder_args, folders, kermany, kermany_miniature  # noqa: E402  (bench/ is on sys.path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--prc", action="store_true", help="also time precision/recall")
    add_folder_args(ap)
    args = ap.parse_args()
    if args.smoke:
        args.n, args.width, args.dim, args.prc = 64, 4, 16, True
    with folders(args):
        run(args)


def run(args):
    device = resolve_device("auto")
    if args.smoke:
        args.shared = args.work / "miniature"
        kermany_miniature(args.shared)
    src = kermany(Path(args.shared), work=args.work, workers=1 if args.smoke else 0)
    pool = load_split(src, "train").images
    rng = np.random.default_rng(0)
    a, b = pool[rng.integers(0, len(pool), args.n)], pool[rng.integers(0, len(pool), args.n)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = DomainNet(ExtractorConfig(resolution=64, num_classes=2, width=args.width, dim=args.dim)).eval()
    state = extractor_state(net)
    fd.features(a[:256], fd.DOMAIN, device, domain_state=state)  # warm-up (cuDNN, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fa = fd.features(a, fd.DOMAIN, device, domain_state=state)
    fb = fd.features(b, fd.DOMAIN, device, domain_state=state)
    t1 = time.perf_counter()
    fid = fd.fid(fa, fb)
    t2 = time.perf_counter()
    m = fs.fidelity_metrics(fa, fb) if args.prc else None
    kid_t0 = time.perf_counter()
    from torch_fidelity.metric_kid import kid_features_to_metric
    kid = kid_features_to_metric(fa.double(), fb.double(), kid_subsets=100, kid_subset_size=min(1000, args.n),
                                 verbose=False)
    t3 = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'cpu'} x{os.cpu_count()}"
    res = {"smoke": args.smoke, "device": name, "torch": torch.__version__, "n": args.n, "resolution": 64,
           "extractor": f"medaug-domain (width {args.width}, dim {args.dim}, untrained: timing only)",
           "features_seconds": round(t1 - t0, 2), "fid_seconds": round(t2 - t1, 2), "kid_seconds": round(t3 - kid_t0, 2),
           "fid_plus_kid_total_seconds": round((t1 - t0) + (t2 - t1) + (t3 - kid_t0), 2),
           "fid": fid, "kid": kid["kernel_inception_distance_mean"]}
    if m is not None:
        res["all_metrics_seconds_after_features"] = round(kid_t0 - t2, 2)
    print(json.dumps(res, indent=2))
    out = args.results / f"fidelity_speed_{device.type}.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
