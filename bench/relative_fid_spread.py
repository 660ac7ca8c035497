"""Relative FID as the fidelity stage now gives it, for the study's experiments, and draw by draw between them.

The fidelity stage reports relative FID (evaluation.fidelity_stats.relative_fid_draws) as the median over
``fidelity.relative_fid_draws`` draws of two real val halves and a synthetic subset, with the draws' 2.5th-97.5th
percentile range. Experiments run before that took one draw. This script makes the stage's draws (the same
generator, stage_rng(base.seed, "fidelity", "medaug-domain"), so the same numbers as the stage) on each
experiment's own features (its synthetic set, val split and domain extractor, read from the study project's DVC
cache at the experiment's rev) and reports the median and the 2.5th / 97.5th percentiles of relative FID and of
its two FIDs. Experiments that share the extractor, the prepared data and the seed get the same real halves and
synthetic rows in every draw, so they are also compared draw by draw (the ratio of their relative FIDs, and how
often the first is the lower).

    python bench/relative_fid_spread.py [--project bench/work/kermany_study] [--only NAME ...] [--draws N]

--draws defaults to the experiment's fidelity.relative_fid_draws, else (an experiment from before it) this
repository's params.yaml's, the number the stage now takes. Writes
<results>/relative_fid_spread.json. Validation images only (the fidelity stage's reference split).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _data import WORK, add_folder_args, dvc_env, dvc_experiments, folders  # noqa: E402


def outputs_at(project: Path, rev: str, dest: Path) -> tuple[dict[str, Path], dict[str, str], dict]:
    """The experiment's outs (dvc.lock at ``rev``) as folders of links into the project's cache, their md5s, and
    the experiment's params."""
    lock = yaml.safe_load(subprocess.run(["git", "show", f"{rev}:dvc.lock"], cwd=project, check=True,
                                         capture_output=True, text=True).stdout)
    md5s = {o["path"]: o["md5"] for stage in lock["stages"].values() for o in stage.get("outs", [])}
    params = yaml.safe_load(subprocess.run(["git", "show", f"{rev}:params.yaml"], cwd=project, check=True,
                                           capture_output=True, text=True).stdout)
    blob = lambda md5: project / ".dvc/cache/files/md5" / md5[:2] / md5[2:]  # noqa: E731
    dirs = {key: md5s[params["paths"][key]] for key in ("synthetic", "prepared", "extractor")}
    for key, md5 in dirs.items():
        for entry in json.loads(blob(md5).read_text()):
            link = dest / key / entry["relpath"]
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                os.symlink(blob(entry["md5"]), link)
    return {key: dest / key for key in dirs}, {key: dirs[key] for key in ("prepared", "extractor")}, params


def quantiles(values) -> dict:
    """Median and 2.5th / 97.5th percentiles of the defined values (as evaluation.fidelity_stats' summary takes
    them)."""
    lo, mid, hi = np.percentile(np.asarray([v for v in values if v is not None], dtype=float), [2.5, 50, 97.5])
    return {"median": round(float(mid), 4), "p2.5": round(float(lo), 4), "p97.5": round(float(hi), 4)}


def spread(f_syn, f_ref, seed: int, draws: int) -> dict:
    """The fidelity stage's relative FID draws for the domain extractor's overall figure, summarised."""
    from common.seeding import stage_rng
    from evaluation import fidelity as fd
    from evaluation import fidelity_stats as fs

    summary, runs = fs.relative_fid_draws(f_syn, f_ref, stage_rng(seed, "fidelity", fd.DOMAIN), draws)
    low, high = summary["relative_fid_range"]
    return {"n_half": runs[0]["n_half"], "draws": draws, "fid_full": round(float(fd.fid(f_syn, f_ref)), 4),
            "relative_fid_each": [r["relative_fid"] for r in runs],
            "relative_fid": {"median": round(summary["relative_fid"], 4), "p2.5": round(low, 4),
                             "p97.5": round(high, 4)},
            "fid_synthetic_vs_real_half": quantiles([r["fid_synthetic_vs_real_half"] for r in runs]),
            "fid_real_halves": quantiles([r["fid_real_halves"] for r in runs])}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=None, help="the study project (default bench/work/kermany_study)")
    ap.add_argument("--only", nargs="+", default=None, metavar="NAME", help="these experiments (default: all)")
    ap.add_argument("--draws", type=int, default=None,
                    help="default: the experiment's (the stage's) fidelity.relative_fid_draws")
    add_folder_args(ap)
    args = ap.parse_args(argv)
    with folders(args):
        return run(args)


def run(args) -> dict:
    import torch

    from evaluation import fidelity as fd
    from pipeline import outputs
    from pipeline.prepared import load_split, load_synthetic

    project = (args.project or WORK / "kermany_study").resolve()
    revs = {e["name"]: e["rev"] for e in sorted(dvc_experiments(project, dvc_env(project)), key=lambda e: e["name"])}
    names = args.only or list(revs)
    missing = sorted(set(names) - set(revs))
    if missing:
        raise SystemExit(f"relative_fid_spread: no experiment {missing} in {project}; it has {list(revs)}")
    default_draws = yaml.safe_load((ROOT / "params.yaml").read_text())["fidelity"]["relative_fid_draws"]
    res, inputs = {}, {}
    for name in names:
        paths, md5s, params = outputs_at(project, revs[name], args.work / "relative_fid_spread" / name)
        seed = int(params["base"]["seed"])
        draws = args.draws if args.draws is not None else int(params["fidelity"].get("relative_fid_draws",
                                                                                         default_draws))
        synthetic, _, _ = load_synthetic(paths["synthetic"])
        val = load_split(paths["prepared"], "val")
        domain = torch.load(paths["extractor"] / outputs.EXTRACTOR, map_location="cpu", weights_only=True)
        f_syn, f_ref = (fd.features(x, fd.DOMAIN, "cpu", domain_state=domain) for x in (synthetic, val.images))
        res[name] = {"rev": revs[name][:7], **md5s, **spread(f_syn, f_ref, seed, draws)}
        inputs[name] = (md5s["prepared"], md5s["extractor"], len(synthetic), seed, draws)
        r = res[name]
        print(f"{name}: relative FID median {r['relative_fid']['median']} [{r['relative_fid']['p2.5']}, "
              f"{r['relative_fid']['p97.5']}] over {draws} draws (n_half {r['n_half']}); synthetic half "
              f"{r['fid_synthetic_vs_real_half']['median']}, real halves {r['fid_real_halves']['median']}", flush=True)
    paired = []
    for a, b in itertools.combinations(names, 2):
        if inputs[a] != inputs[b]:
            continue   # other real halves or synthetic rows: not paired draw by draw
        both = [(x, y) for x, y in zip(res[a]["relative_fid_each"], res[b]["relative_fid_each"])
                if x is not None and y is not None]
        ra, rb = np.array(both, dtype=float).T
        paired.append({"a": a, "b": b, "ratio_a_over_b": quantiles(ra / rb),
                       "share_a_lower": round(float((ra < rb).mean()), 4)})
        print(f"{a} / {b}: ratio median {paired[-1]['ratio_a_over_b']['median']}, {a} lower in "
              f"{paired[-1]['share_a_lower']:.0%} of the draws", flush=True)
    # the stage's draws (their number from each experiment's params): the figures the fidelity stage reports now
    out = {"smoke": args.smoke, "project": project.name, "stage_draws": args.draws is None, "experiments": res,
           "paired": paired}
    (args.results / "relative_fid_spread.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"-> {args.results / 'relative_fid_spread.json'}")
    return out


if __name__ == "__main__":
    main()
