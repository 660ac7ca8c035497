"""Fidelity of a trained generator on the Kermany chest X-rays, next to the scale: two real halves and a
degenerate generator (one training step). Runs the pipeline's own stages (extractor, train_gan,
synthesize, fidelity) with -S overrides into bench/work/kermany_run/ (--work elsewhere), MLflow off.

    python bench/fidelity_kermany.py [--steps 3000] [--width 0.5] [--batch 64] [--gan-overrides ...] [--smoke]

GPU (the issue's setting): --steps 20000 --width 1 --batch 128 --extractor-width 32 --extractor-dim 256
--extractor-steps 2000. Prints a table and writes bench/results/fidelity_kermany_<device>.json with the
per-class domain FID, relative FID and memorisation fractions, and copies the sample grids per class
(--results elsewhere). --smoke: the same stages for a few steps with tiny networks on a generated miniature of
the Kermany folder, in a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import fidelity, synthesize, train_extractor, train_gan  # noqa: E402
from pipeline.runtime import resolve_device  # noqa: E402
from _data import add_folder_args, folders, kermany, kermany_miniature  # noqa: E402  (bench/ is on sys.path)


def stage(module, *overrides):
    argv = ["--params", str(ROOT / "params.yaml"), "-S", "mlflow.enabled=false"]
    for o in overrides:
        argv += ["-S", o]
    t = time.perf_counter()
    out = module.main(argv)
    return out, round(time.perf_counter() - t, 1)


def summarise(result: dict) -> dict:
    dom = result["extractors"]["medaug-domain"]
    rows = {"overall": dom["overall"], **dom.get("per_class", {})}
    keep = ("fid", "relative_fid", "relative_fid_range", "relative_fid_draws", "fid_real_halves",
            "fid_synthetic_vs_real_half", "kid", "precision", "recall", "n_precision_recall", "precision_vs_half",
            "recall_vs_half", "precision_real_halves", "recall_real_halves", "n_synthetic", "n_real", "n_half")
    return {"domain": {k: {f: v.get(f) for f in keep} for k, v in rows.items()},
            "memorisation": result["memorisation"],
            "inception": ("not requested" if "inception-v3-compat" not in result["extractors"] else
                          result["extractors"]["inception-v3-compat"].get("unavailable", "computed"))}


def num(x, digits: int) -> str:
    """A figure for the table; n/a where the stage gave none (e.g. a class with fewer than 2 images a half)."""
    return "n/a" if x is None else f"{x:.{digits}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--fid-every", type=int, default=10, help="epochs between FID checks")
    ap.add_argument("--extractor-width", type=int, default=16)
    ap.add_argument("--extractor-dim", type=int, default=128)
    ap.add_argument("--extractor-steps", type=int, default=1000)
    ap.add_argument("--gan-overrides", nargs="*", default=[], help="extra -S overrides for train_gan, e.g. gan.loss=hinge")
    add_folder_args(ap)
    args = ap.parse_args()
    if args.smoke:
        args.steps, args.width, args.batch, args.fid_every = 2, 0.125, 8, 1
        args.extractor_width, args.extractor_dim, args.extractor_steps = 4, 16, 3
    with folders(args):
        run(args)


def run(args):
    if args.smoke:
        args.shared = args.work / "miniature"
        kermany_miniature(args.shared)
    work = args.work / "kermany_run"
    paths = {k: work / k for k in ("prepared", "extractor", "gan", "gan_reports", "synthetic", "degenerate",
                                   "degenerate_synthetic", "fidelity")}
    common = [f"paths.prepared={kermany(Path(args.shared), work=args.work, workers=1 if args.smoke else 0)}", f"paths.extractor={paths['extractor']}",
              f"paths.fidelity_reports={paths['fidelity']}", f"paths.fidelity_metrics={paths['fidelity'] / 'fidelity.json'}",
              f"extractor.width={args.extractor_width}", f"extractor.dim={args.extractor_dim}",
              f"extractor.steps={args.extractor_steps}", "extractor.batch=128"]
    if args.smoke:  # Inception's weights are a 100 MB download on first use: not in a smoke run
        common.append("fidelity.extractors=[medaug-domain]")
    timings = {}
    _, timings["extractor"] = stage(train_extractor, *common)
    gan = [f"gan.width={args.width}", f"gan.batch={args.batch}", "gan.log_every=100", "gan.checkpoint_every=1000",
           "gan.grid_every=0", f"gan.fid_every={args.fid_every}", *args.gan_overrides]
    trained, timings["train_gan"] = stage(train_gan, *common, *gan, f"gan.steps={args.steps}",
                                          f"paths.gan_model={paths['gan']}", f"paths.gan_reports={paths['gan_reports']}",
                                          f"paths.gan_work={paths['gan'] / 'work'}")
    _, timings["synthesize"] = stage(synthesize, *common, f"paths.gan_model={paths['gan']}",
                                     f"paths.synthetic={paths['synthetic']}")
    best, timings["fidelity"] = stage(fidelity, *common, f"paths.synthetic={paths['synthetic']}")
    best_pairs = {p.name: p for p in paths["fidelity"].glob("*.png")}
    results_dir = args.results
    device = resolve_device("auto").type
    copied = []
    for p in [*paths["gan_reports"].glob("samples_*.png"), paths["gan_reports"] / "grids/final.png",
              *best_pairs.values()]:
        if p.exists():
            dst = results_dir / f"kermany_{device}_{p.name}"
            shutil.copy(p, dst)
            copied.append(dst.name)

    # the degenerate generator: one training step, no FID selection
    stage(train_gan, *common, *gan, "gan.steps=1", "gan.fid_every=0", f"paths.gan_model={paths['degenerate']}",
          f"paths.gan_reports={paths['degenerate'] / 'reports'}",
          f"paths.gan_work={paths['degenerate'] / 'work'}")
    stage(synthesize, *common, f"paths.gan_model={paths['degenerate']}", f"paths.synthetic={paths['degenerate_synthetic']}")
    degenerate, _ = stage(fidelity, *common, f"paths.synthetic={paths['degenerate_synthetic']}",
                          f"paths.fidelity_reports={paths['degenerate'] / 'fidelity'}",
                          f"paths.fidelity_metrics={paths['degenerate'] / 'fidelity.json'}")

    # the stage writes no timings (its outputs are DVC outs): throughput from the stage's wall time, here
    trained_steps = trained["steps"] - trained["resumed_from_step"]
    out = {"smoke": args.smoke, "device": device,
           "train_gan": {**{k: trained.get(k) for k in ("steps", "resumed_from_step", "epochs", "generator_step",
                                                        "fid_domain_best", "fid_domain_last", "precision", "final")},
                         "images_per_second_stage_wall": round(trained_steps * args.batch / timings["train_gan"], 1)
                         if trained_steps else None},
           "gan_overrides": gan, "extractor": {"width": args.extractor_width, "dim": args.extractor_dim,
                                                "steps": args.extractor_steps},
           "reference_split": best["reference_split"], "timings_seconds": timings,
           "best_generator": summarise(best), "degenerate_generator_1_step": summarise(degenerate),
           "figures": copied}
    dst = results_dir / f"fidelity_kermany_{device}.json"
    dst.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("train_gan", "timings_seconds")}, indent=2))
    for name in ("best_generator", "degenerate_generator_1_step"):
        print(name)
        for k, v in out[name]["domain"].items():
            print(f"  {k:10s} FID {num(v['fid'], 3)}  relative {num(v['relative_fid'], 2)}  real halves "
                  f"{num(v['fid_real_halves'], 3)}"
                  f"  precision {num(v['precision'], 3)}  recall {num(v['recall'], 3)} (n {v['n_synthetic']} vs "
                  f"{v['n_real']}; at n_half {v['n_half']}: synthetic {num(v['precision_vs_half'], 3)} / "
                  f"{num(v['recall_vs_half'], 3)}, real halves {num(v['precision_real_halves'], 3)} / "
                  f"{num(v['recall_real_halves'], 3)})")
        for space, m in out[name]["memorisation"].items():
            (s_low, s_high), (h_low, h_high) = m["fraction_synthetic_below_ci"], m["fraction_heldout_below_ci"]
            print(f"  memorisation ({space}): synthetic {m['fraction_synthetic_below']:.4f} [{s_low:.4f}, {s_high:.4f}]"
                  f" vs held-out {m['fraction_heldout_below']:.4f} [{h_low:.4f}, {h_high:.4f}] below the 1st "
                  "percentile of the other held-out half")
    print(f"-> {dst}")


if __name__ == "__main__":
    main()
