"""fidelity stage: synthetic set vs real held-out images -> paths.fidelity_metrics (metrics/fidelity.json) and
paths.fidelity_reports/ (nearest-neighbour figures).

For each extractor in fidelity.extractors: FID, KID, precision/recall, overall and per class, with the
sample counts; relative FID; and, with the domain extractor and in pixel space, the memorisation audit
(synthetic vs training images, against held-out vs training images). An extractor that cannot be built
here (Inception weights offline) gives nulls with a fixed reason, and a warning with the error itself. The
reference is the validation split by default, so choosing runs by FID never touches the test split.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from common.images import save_png, tile
from common.io import write_json
from common.seeding import stage_rng
from evaluation import fidelity as fd
from evaluation import fidelity_stats as fs
from pipeline import outputs
from pipeline.params import parse_stage_args
from pipeline.prepared import Split, load_split, load_synthetic
from pipeline.runtime import resolve_device
from pipeline.tracking import numeric_metrics, stage_run

NULL_METRICS = dict.fromkeys((fd.FID, fs.KID, fs.KID_STD, fs.PRECISION, fs.RECALL, "relative_fid"))
INCEPTION_UNAVAILABLE = ("Inception weights not found: set fidelity.inception_weights to a local copy, or allow "
                         "the download")


def set_metrics(f_syn, f_ref, rng, kid_subsets: int, draws: int) -> dict:
    """Fidelity metrics plus relative FID (medians over ``draws`` draws of the halves) for one pair of feature
    sets (nulls with a note when too small)."""
    if min(len(f_syn), len(f_ref)) < 2:
        return {**NULL_METRICS, fs.N_SYNTHETIC: len(f_syn), fs.N_REAL: len(f_ref), "note": "fewer than 2 images"}
    out = fs.fidelity_metrics(f_syn, f_ref, kid_subsets=kid_subsets)
    try:
        out.update(fs.relative_fid_draws(f_syn, f_ref, rng, draws)[0])
    except ValueError as e:
        out.update(relative_fid=None, note=str(e))
    return out


def evaluate(name, f_syn, f_ref, y_syn, y_ref, classes, rng, kid_subsets, draws) -> dict:
    numbers = {"overall": set_metrics(f_syn, f_ref, rng, kid_subsets, draws)}
    if (y_syn >= 0).all():
        numbers["per_class"] = {cls: set_metrics(f_syn[y_syn == i], f_ref[y_ref == i], rng, kid_subsets, draws)
                                for i, cls in enumerate(classes)}
    return {"extractor": name, **numbers}


def pairs_figure(path, synthetic, train, audit, pairs: int) -> list[int]:
    """The ``pairs`` synthetic images closest to a training image, each beside that training image; returns their
    rows in the synthetic set (the report shows them, so vtt_export leaves them out)."""
    order = np.argsort(audit["distances"])[:pairs]
    tiles = np.stack([image for i in order for image in (synthetic[i], train[audit["nearest_train"][i]])])
    save_png(path, tile(tiles, 8))
    return sorted(int(i) for i in order)


class Compared(NamedTuple):
    """The image sets the stage compares: synthetic (with labels, -1 when unconditional), the real training
    split (for the memorisation audit) and the real reference split."""
    synthetic: np.ndarray
    synthetic_labels: np.ndarray
    train: Split
    reference: Split


def check_reference_split(split: str) -> None:
    if split not in ("val", "test"):
        raise SystemExit(f"fidelity: reference_split must be val or test, got {split!r}")
    if split == "test":
        warnings.warn("fidelity.reference_split=test: choosing runs by these FIDs selects on the test split",
                      stacklevel=1)


def load_inputs(args, reference_split: str) -> tuple[Compared, dict]:
    """The image sets and the domain extractor's state, once the extractor was trained on this train split."""
    paths = args.params["paths"]
    synthetic, synthetic_labels, _ = load_synthetic(args.path(paths["synthetic"]))
    prepared = args.path(paths["prepared"])
    train, reference = load_split(prepared, "train"), load_split(prepared, reference_split)
    domain = torch.load(args.path(paths["extractor"]) / outputs.EXTRACTOR, map_location="cpu", weights_only=True)
    if domain.get("data") != train.data_hash:
        raise SystemExit("fidelity: the domain extractor was trained on other data; run the extractor stage again")
    return Compared(synthetic, synthetic_labels, train, reference), domain


def extractor_kwargs(args, fid_params: dict, name: str, domain: dict) -> dict:
    """The extractor's arguments. Inception's weights (fidelity.inception_weights, else torch's hub cache when it
    holds them) are checked to be torch-fidelity's; a missing file gives null metrics with the reason, as does no
    download."""
    kwargs = {"domain_state": domain} if name == fd.DOMAIN else {}
    if name != fd.INCEPTION:
        return kwargs
    weights = args.path(fid_params["inception_weights"]) if fid_params["inception_weights"] else fd.hub_weights()
    if weights.is_file():
        try:
            fd.check_inception_weights(weights)
        except ValueError as e:
            raise SystemExit(f"fidelity: Inception weights: {e}") from e
    if fid_params["inception_weights"] or weights.is_file():
        kwargs["feature_extractor_weights_path"] = str(weights)
    return kwargs


def unavailable(name: str, error: Exception) -> dict:
    """Null metrics and the reason. The reason goes into an out (and the report), so it is fixed: the error's
    text (a DNS message, this machine's paths) goes to stderr only, in the warning."""
    warnings.warn(f"fidelity: {name} unavailable, its metrics are null: {error}", stacklevel=1)
    reason = INCEPTION_UNAVAILABLE if name == fd.INCEPTION else f"{name} could not be built; the stage's log says why"
    return {"extractor": name, "overall": dict(NULL_METRICS), "unavailable": reason}


def compare_extractors(args, fid_params: dict, sets: Compared, domain: dict, device, seed: int):
    """extractor name -> its fidelity numbers, and the domain extractor's features of the synthetic, train and
    reference images for the memorisation audit (None when it is not among fidelity.extractors)."""
    extractors, domain_features = {}, None
    for name in fid_params["extractors"]:
        kwargs = extractor_kwargs(args, fid_params, name, domain)
        rng = stage_rng(seed, "fidelity", name)
        try:
            f_syn = fd.features(sets.synthetic, name, device, **kwargs)
            f_ref = fd.features(sets.reference.images, name, device, **kwargs)
        except fd.ExtractorUnavailable as e:
            extractors[name] = unavailable(name, e)
            continue
        extractors[name] = evaluate(name, f_syn, f_ref, sets.synthetic_labels, sets.reference.labels,
                                    sets.train.classes, rng, int(fid_params["kid_subsets"]),
                                    int(fid_params["relative_fid_draws"]))
        if name == fd.DOMAIN:
            domain_features = (f_syn, fd.features(sets.train.images, name, device, **kwargs), f_ref)
    return extractors, domain_features


def memorisation_audits(domain_features, sets: Compared, percentile: float, seed: int) -> dict[str, dict]:
    """space (features when the domain extractor ran, pixels) -> the memorisation audit, the held-out images
    split by patient into a threshold half and a measured half (one split for both spaces)."""
    halves = fs.patient_halves([row["patient_id"] for row in sets.reference.rows],
                               stage_rng(seed, "fidelity", "memorisation"))
    audits = {}
    if domain_features is not None:
        audits["features"] = fs.memorisation_audit(*domain_features, percentile=percentile, halves=halves)
    audits["pixels"] = fs.memorisation_audit(sets.synthetic.astype(np.float32), sets.train.images.astype(np.float32),
                                             sets.reference.images.astype(np.float32), percentile=percentile,
                                             halves=halves)
    return audits


def log_run(args, fid_params: dict, result: dict, out: Path, reports: Path, seconds: float) -> None:
    params = args.params
    with stage_run("fidelity", params, args.root, {"base": params["base"], "fidelity": fid_params}) as ml:
        if ml:
            flat = {k: v for k, v in result.items() if k in ("extractors", "memorisation")}
            ml.log_metrics({**numeric_metrics(flat), "seconds": seconds})
            ml.log_artifact(str(out))
            for png in sorted(reports.glob("*.png")):
                ml.log_artifact(str(png))


def print_results(result: dict, seconds: float, percentile: float) -> None:
    for name, numbers in result["extractors"].items():
        overall = numbers["overall"]
        if overall[fd.FID] is None:
            print(f"fidelity: {name}: unavailable ({numbers.get('unavailable', numbers.get('note'))})")
        else:
            print(f"fidelity: {name}: FID {overall[fd.FID]:.3f}, relative FID {overall['relative_fid']} "
                  f"(median of {overall.get('relative_fid_draws')} draws; 95% of them in "
                  f"{overall.get('relative_fid_range')}), "
                  f"KID {overall[fs.KID]:.4f}, precision {overall[fs.PRECISION]}, recall {overall[fs.RECALL]} "
                  f"({overall[fs.N_SYNTHETIC]} vs {overall[fs.N_REAL]})")
    print(f"fidelity: {seconds:.0f} s")
    for space, audit in result["memorisation"].items():
        (s_low, s_high), (h_low, h_high) = audit["fraction_synthetic_below_ci"], audit["fraction_heldout_below_ci"]
        print(f"fidelity: memorisation ({space}): {audit['fraction_synthetic_below']:.2%} [{s_low:.2%}, {s_high:.2%}] "
              f"of synthetic images closer to a training image than percentile {percentile:g} of held-out images, "
              f"against {audit['fraction_heldout_below']:.2%} [{h_low:.2%}, {h_high:.2%}] of other held-out images")


def main(argv=None) -> dict:
    args = parse_stage_args(__doc__, argv)
    params = args.params
    fid_params, seed = params["fidelity"], int(params["base"]["seed"])
    check_reference_split(fid_params["reference_split"])
    if int(fid_params["relative_fid_draws"]) < 1:
        raise SystemExit(f"fidelity: relative_fid_draws must be at least 1, got {fid_params['relative_fid_draws']}")
    device = resolve_device(fid_params["device"])
    sets, domain = load_inputs(args, fid_params["reference_split"])
    reports = args.path(params["paths"]["fidelity_reports"])
    started = time.perf_counter()
    extractors, domain_features = compare_extractors(args, fid_params, sets, domain, device, seed)
    result = {"reference_split": fid_params["reference_split"], "n_synthetic": len(sets.synthetic),
              "n_reference": len(sets.reference.images), "n_train": len(sets.train.images),
              "classes": sets.train.classes, "extractors": extractors}
    percentile = float(fid_params["memorisation_percentile"])
    audits = memorisation_audits(domain_features, sets, percentile, seed)
    reports.mkdir(parents=True, exist_ok=True)
    result["memorisation"] = {}
    for space, audit in audits.items():
        shown = pairs_figure(reports / outputs.nearest_pairs(space), sets.synthetic, sets.train.images, audit,
                             int(fid_params["pairs"]))
        result["memorisation"][space] = {**{k: v for k, v in audit.items() if k not in ("distances", "nearest_train")},
                                         outputs.PAIRS_SHOWN: shown}
    seconds = time.perf_counter() - started  # to the log and MLflow, not to the metrics file (an out)
    out = args.path(params["paths"]["fidelity_metrics"])
    write_json(out, result)
    log_run(args, fid_params, result, out, reports, seconds)
    print_results(result, seconds, percentile)
    return result

if __name__ == "__main__":
    main()
