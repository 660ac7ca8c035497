"""fidelity stage: synthetic set vs real held-out images -> paths.fidelity_metrics (metrics/fidelity.json) and
paths.fidelity_reports/ (nearest-neighbour figures).

For each extractor in fidelity.extractors: FID, KID, precision/recall, overall and per class, with the
sample counts; relative FID; and, with the domain extractor and in pixel space, the memorisation audit
(synthetic vs training images, against held-out vs training images). An extractor that cannot be built
here (Inception weights offline) gives nulls with the reason and a warning. The reference is the
validation split by default, so choosing runs by FID never touches the test split.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch

from common.images import save_png, tile
from common.io import write_json
from common.seeding import stage_rng
from evaluation import fidelity as fd
from pipeline import outputs
from pipeline.params import parse_stage_args
from pipeline.prepared import load_split, load_synthetic
from pipeline.runtime import resolve_device
from pipeline.tracking import numeric_metrics, stage_run

NULL_METRICS = dict.fromkeys((fd.FID, fd.KID, fd.KID_STD, fd.PRECISION, fd.RECALL, "relative_fid"))


def set_metrics(f_syn, f_ref, rng, kid_subsets: int) -> dict:
    """Fidelity metrics plus relative FID for one pair of feature sets (nulls with a note when too small)."""
    if min(len(f_syn), len(f_ref)) < 2:
        return {**NULL_METRICS, fd.N_SYNTHETIC: len(f_syn), fd.N_REAL: len(f_ref), "note": "fewer than 2 images"}
    out = fd.fidelity_metrics(f_syn, f_ref, kid_subsets=kid_subsets)
    try:
        out.update(fd.relative_fid(f_syn, f_ref, rng))
    except ValueError as e:
        out.update(relative_fid=None, note=str(e))
    return out


def evaluate(name, f_syn, f_ref, y_syn, y_ref, classes, rng, kid_subsets) -> dict:
    res = {"overall": set_metrics(f_syn, f_ref, rng, kid_subsets)}
    if (y_syn >= 0).all():
        res["per_class"] = {c: set_metrics(f_syn[y_syn == i], f_ref[y_ref == i], rng, kid_subsets)
                            for i, c in enumerate(classes)}
    return {"extractor": name, **res}


def pairs_figure(path, synthetic, train, audit, k: int) -> None:
    """The k synthetic images closest to a training image, each beside that training image."""
    order = np.argsort(audit["distances"])[:k]
    tiles = np.stack([x for i in order for x in (synthetic[i], train[audit["nearest_train"][i]])])
    save_png(path, tile(tiles, 8))


def main(argv=None) -> dict:
    args = parse_stage_args(__doc__, argv)
    p = args.params
    f, seed = p["fidelity"], int(p["base"]["seed"])
    if f["reference_split"] not in ("val", "test"):
        raise SystemExit(f"fidelity: reference_split must be val or test, got {f['reference_split']!r}")
    if f["reference_split"] == "test":
        warnings.warn("fidelity.reference_split=test: choosing runs by these FIDs selects on the test split",
                      stacklevel=1)
    device = resolve_device(f["device"])
    syn, y_syn, _ = load_synthetic(args.path(p["paths"]["synthetic"]))
    prepared = args.path(p["paths"]["prepared"])
    train, ref = load_split(prepared, "train"), load_split(prepared, f["reference_split"])
    domain = torch.load(args.path(p["paths"]["extractor"]) / outputs.EXTRACTOR, map_location="cpu", weights_only=True)
    if domain.get("data") != train.data_hash:
        raise SystemExit("fidelity: the domain extractor was trained on other data; run the extractor stage again")
    reports = args.path(p["paths"]["fidelity_reports"])
    t0 = time.perf_counter()
    result = {"reference_split": f["reference_split"], "n_synthetic": len(syn), "n_reference": len(ref.images),
              "n_train": len(train.images), "classes": train.classes, "extractors": {}}
    domain_feats = None
    for name in f["extractors"]:
        kwargs = {"domain_state": domain} if name == fd.DOMAIN else {}
        if name == fd.INCEPTION and f["inception_weights"]:
            kwargs["feature_extractor_weights_path"] = str(args.path(f["inception_weights"]))
        rng = stage_rng(seed, "fidelity", name)
        try:
            f_syn = fd.features(syn, name, device, **kwargs)
            f_ref = fd.features(ref.images, name, device, **kwargs)
        except fd.ExtractorUnavailable as e:
            warnings.warn(f"fidelity: {name} unavailable, its metrics are null: {e}", stacklevel=1)
            # the reason goes into an out: without this machine's absolute paths
            reason = str(e).replace(str(args.root), ".").replace(str(Path.home()), "~")
            result["extractors"][name] = {"extractor": name, "overall": dict(NULL_METRICS), "unavailable": reason}
            continue
        result["extractors"][name] = evaluate(name, f_syn, f_ref, y_syn, ref.labels, train.classes, rng,
                                              int(f["kid_subsets"]))
        if name == fd.DOMAIN:
            domain_feats = (f_syn, fd.features(train.images, name, device, **kwargs), f_ref)

    pct = float(f["memorisation_percentile"])
    memo = {}
    if domain_feats is not None:
        memo["features"] = fd.memorisation_audit(*domain_feats, percentile=pct)
    memo["pixels"] = fd.memorisation_audit(syn.astype(np.float32), train.images.astype(np.float32),
                                           ref.images.astype(np.float32), percentile=pct)
    reports.mkdir(parents=True, exist_ok=True)
    for space, audit in memo.items():
        pairs_figure(reports / outputs.nearest_pairs(space), syn, train.images, audit, int(f["pairs"]))
    result["memorisation"] = {space: {k: v for k, v in a.items() if k not in ("distances", "nearest_train")}
                              for space, a in memo.items()}
    seconds = time.perf_counter() - t0  # to the log and MLflow, not to the metrics file (an out)
    out = args.path(p["paths"]["fidelity_metrics"])
    write_json(out, result)

    with stage_run("fidelity", p, args.root, {"base": p["base"], "fidelity": f}) as ml:
        if ml:
            flat = {k: v for k, v in result.items() if k in ("extractors", "memorisation")}
            ml.log_metrics({**numeric_metrics(flat), "seconds": seconds})
            ml.log_artifact(str(out))
            for png in sorted(reports.glob("*.png")):
                ml.log_artifact(str(png))
    for name, r in result["extractors"].items():
        o = r["overall"]
        if o[fd.FID] is None:
            print(f"fidelity: {name}: unavailable ({r.get('unavailable', r.get('note'))})")
        else:
            print(f"fidelity: {name}: FID {o[fd.FID]:.3f}, relative FID {o['relative_fid']}, KID {o[fd.KID]:.4f}, "
                  f"precision {o[fd.PRECISION]}, recall {o[fd.RECALL]} ({o[fd.N_SYNTHETIC]} vs {o[fd.N_REAL]})")
    print(f"fidelity: {seconds:.0f} s")
    for space, m in result["memorisation"].items():
        print(f"fidelity: memorisation ({space}): {m['fraction_synthetic_below']:.3%} of synthetic images closer "
              f"to a training image than percentile {pct:g} of held-out images "
              f"({m['fraction_heldout_below']:.3%} of held-out images)")
    return result


if __name__ == "__main__":
    main()
