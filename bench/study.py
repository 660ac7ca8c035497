"""The strict low-data study (issue 18) as DVC experiments on the Kermany download layout.

1. The layout: chest_xray/train/<class> from ../shared/data and chest_xray/test/<class> (the official 624
   test images) from ../shared/eval, symlinked under <work>/layout (bench/published_layouts.py).
2. The study project: a clone of this repository's HEAD in <work>/kermany_study whose params.yaml gets
   bench/kermany_study.yaml's `common` settings and data.source, committed there as the baseline.
3. One experiment per real fraction, queued and run one at a time:
       dvc exp run --queue -n fraction-<f> -S data.train_fraction=<f> -S <per_fraction overrides>
       dvc exp run --run-all --jobs 1
   data.train_fraction keeps that share of the training patients in the prepare stage, so the extractor, the
   GAN and every classifier see the same reduced real set; val (carved from train by patient) and the
   official test folder are untouched. DVC's run cache restores any stage already run with the same inputs,
   so an interrupted study resumes where it stopped (run this script again); a GAN killed mid-run resumes from
   its checkpoint in <work>/kermany_study/checkpoints/<name> (paths.gan_work, outside the queue's temp folder).
4. Then the scale-up experiments of bench/kermany_study.yaml (`scale_up`: name -> overrides), queued the same
   way: fraction 1.0 with more compute, to show how far the goals move with it.

    python bench/study.py [--only fraction-1-wide-gan ...] [--smoke]
    python bench/study_table.py            # the table, the plot and the JSON from `dvc exp show --json`

Every command run is printed. The log of the queue is <work>/kermany_study.log.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import published_layouts  # noqa: E402
from _data import add_folder_args, dvc_experiments, folders  # noqa: E402

STUDY = ROOT / "bench/kermany_study.yaml"
SMOKE = {  # the same code path in a minute or two: tiny sizes, two arms
    "prepare": {"size": 32, "workers": 1},
    "gan": {"width": 0.25, "steps": 4, "batch": 8, "fid_samples": 16, "log_every": 2, "checkpoint_every": 4,
            "fid_every": 0},
    "extractor": {"steps": 2, "batch": 8},
    "downstream": {"arms": {"cnn": {"real": ["real"], "synthetic": ["real_synthetic"]},
                            "xgboost": {"real": [], "synthetic": []}},
                   "seeds": [0], "cnn": {"batch": 8}, "bootstrap": {"samples": 20}},
    "vtt": {"n": 2, "display_size": 64},
    "fidelity": {"relative_fid_draws": 5},
}
# a scale-up experiment that changes the CNN only: its GAN, extractor and prepare come from DVC's run cache
SMOKE_SCALE_UP = {"fraction-1-scaled": {"data.train_fraction": 1.0, "downstream.cnn.epochs": 2}}


def merge(into: dict, over: dict) -> dict:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into


def sh(cmd: list[str], cwd: Path, env: dict, log: Path | None = None) -> str:
    print("$", " ".join(cmd), flush=True)
    if log is None:
        return subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout
    with open(log, "a") as fh:
        subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=fh, stderr=subprocess.STDOUT)
    return ""


def project(path: Path, source: Path, settings: dict, env: dict) -> None:
    """The study project: a clone of HEAD with the study's params committed as its baseline (made once)."""
    if (path / ".git").exists():
        return
    sh(["git", "clone", "-q", str(ROOT), str(path)], ROOT, env)
    params = yaml.safe_load((path / "params.yaml").read_text())
    merge(params, settings)
    params["data"]["source"] = str(source)
    params["mlflow"]["tracking_uri"] = f"sqlite:///{path / 'mlflow.db'}"   # queued runs work in temp folders
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["git", "commit", "-qam", "Kermany study baseline (bench/kermany_study.yaml)"], path, env)


def experiments(path: Path, env: dict) -> dict[str, str]:
    """Name -> rev of the study's finished experiments."""
    return {rev["name"]: rev["rev"] for rev in dvc_experiments(path, env)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--only", nargs="+", default=None, metavar="NAME",
                    help="run only these experiments (fraction-<f> or a scale_up name); default: every one of "
                         "bench/kermany_study.yaml not yet run in the study project")
    add_folder_args(ap)
    args = ap.parse_args(argv)
    with folders(args):
        return run(args)


def override(key: str, value) -> str:
    """key=value in the override grammar of `dvc exp run -S` (lists as [a,b])."""
    if isinstance(value, list):
        return f"{key}=[{','.join(str(v) for v in value)}]"
    if isinstance(value, str) and "," in value:   # unquoted, DVC reads a,b as a sweep: one experiment per value
        return f"{key}='{value}'"
    return f"{key}={value}"


def planned(study: dict, per_fraction: dict, args) -> dict[str, list[str]]:
    """Experiment name -> its -S overrides: one per real fraction, then the scale-up experiments of
    bench/kermany_study.yaml; with --only, the ones it names."""
    out = {f"fraction-{f:g}": [f"data.train_fraction={f}", *(override(k, v) for k, v in overrides.items())]
           for f, overrides in per_fraction.items()}
    out.update({name: [override(k, v) for k, v in settings.items()]
                for name, settings in scale_up(study, args).items()})
    unknown = set(args.only or ()) - set(out)
    if unknown:
        raise SystemExit(f"study: --only {sorted(unknown)}: not in bench/kermany_study.yaml; it has {list(out)}")
    return {name: overrides for name, overrides in out.items() if not args.only or name in args.only}


def scale_up(study: dict, args) -> dict[str, dict]:
    return SMOKE_SCALE_UP if args.smoke else study.get("scale_up") or {}


def run(args) -> dict:
    study = yaml.safe_load(STUDY.read_text())
    settings = merge(study["common"], SMOKE) if args.smoke else study["common"]
    per_fraction = {float(k): v for k, v in study["per_fraction"].items()}
    if args.smoke:
        per_fraction = {1.0: {"downstream.cnn.epochs": 1}}
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PYTHONPATH", None)   # each experiment imports the code of its own workspace
    layout = args.work / "layout" / "kermany" / "chest_xray"
    if not layout.exists():
        layout = (published_layouts.build_generated_kermany(args.work / "layout", per_class=10) if args.smoke
                  else published_layouts.build_kermany(Path(args.shared), args.work / "layout"))
    path = args.work / "kermany_study"
    env["DVC_SITE_CACHE_DIR"] = str(path / ".dvc/tmp/site-cache")
    project(path, layout, settings, env)
    done = experiments(path, env)
    queued, log = [], args.work / "kermany_study.log"
    plan = planned(study, per_fraction, args)
    for name, overrides in plan.items():
        if name in done:
            print(f"{name}: already run ({done[name][:7]}); skipped")
            continue
        # a queued run works in a temp folder that a rerun does not reuse: its GAN checkpoint lives outside it,
        # one folder per experiment, so a study killed mid-GAN resumes from its last checkpoint
        gan_work = f"paths.gan_work='{path / 'checkpoints' / name}'"   # quoted: a path may hold : or =
        sh([sys.executable, "-m", "dvc", "exp", "run", "--queue", "-n", name,
            *(a for o in (*overrides, gan_work) for a in ("-S", o))], path, env)
        # one queued experiment per --run-all: with two queued, DVC 3's worker finished the first and left the
        # second queued, with no worker and `--run-all` waiting for ever
        sh([sys.executable, "-m", "dvc", "exp", "run", "--run-all", "--jobs", "1"], path, env, log=log)
        queued.append(name)
    done = experiments(path, env)
    missing = [name for name in plan if name not in done]
    if missing:
        raise SystemExit(f"study: {missing} did not finish; see {log} and `dvc queue status` in {path}")
    print(f"study project {path}: experiments {sorted(done)}; next: python bench/study_table.py")
    res = {"smoke": args.smoke, "project": str(path), "experiments": done, "queued_now": queued,
           "per_fraction": {f"{f:g}": overrides for f, overrides in per_fraction.items()},
           "scale_up": scale_up(study, args), "only": args.only}
    (args.results / "kermany_study_runs.json").write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
