"""The downstream table on the Kermany chest X-rays: every arm of the downstream stage (classifier x training
set x real fraction x seed) and the summary, using the synthetic set and domain extractor that
bench/fidelity_kermany.py made (run that first). Runs the pipeline's own stage code with -S overrides into
bench/work/kermany_run/ (--work elsewhere), MLflow off.

    python bench/downstream_kermany.py [--classifiers cnn xgboost] [--trainsets real real_classic ...]
        [--fractions 1.0 0.25 0.1] [--seeds 0 1 2] [--epochs 30] [--width 32] [--jobs 1] [-S key=value ...] [--smoke]

--classifiers x --trainsets become the params' ``downstream.arms.<classifier>.{real,synthetic}`` lists (each
training set in the group of what it reads); -S passes any other params override to every stage.

``--jobs N`` runs N arms at once, each in its own process (as ``dvc repro`` of the matrix stage would with
parallel stages): the small CNNs leave most of a GPU idle and XGBoost gets the CPU cores shared out.

Prints the Markdown summary and writes bench/results/downstream_kermany_<device>.{json,md} (--results
elsewhere). --smoke: every classifier and training set once (1 fraction, 1 seed, one epoch, tiny networks)
on a generated miniature of the Kermany folder, with the extractor and synthetic set made by the same stages
for a step or two, in a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import downstream, downstream_summary  # noqa: E402
from pipeline.arms import CLASSIFIERS, GROUPS, TRAINSETS  # noqa: E402
from pipeline.runtime import resolve_device  # noqa: E402
from _data import add_folder_args, folders, kermany, kermany_miniature  # noqa: E402  (bench/ is on sys.path)


def arms_overrides(classifiers: list[str], trainsets: list[str]) -> list[str]:
    """--classifiers x --trainsets as ``downstream.arms`` overrides: each training set in its group (real-only or
    with synthetic), [] for the classifiers and groups not run."""
    lst = lambda xs: "[" + ",".join(str(x) for x in xs) + "]"  # noqa: E731
    return [f"downstream.arms.{clf}.{group}={lst([t for t in trainsets if t in members] if clf in classifiers else [])}"
            for clf in CLASSIFIERS for group, members in GROUPS.items()]


def smoke_inputs(work: Path, prepared: Path) -> list[str]:
    """The extractor and synthetic set the downstream arms read, made by their stages in a step or two."""
    from pipeline import synthesize, train_extractor, train_gan

    paths = [f"paths.prepared={prepared}", f"paths.extractor={work / 'extractor'}",
             f"paths.gan_model={work / 'gan'}", f"paths.gan_reports={work / 'gan_reports'}",
             f"paths.gan_work={work / 'gan_work'}",
             f"paths.synthetic={work / 'synthetic'}"]
    tiny = ["extractor.width=4", "extractor.dim=16", "extractor.steps=2", "gan.width=0.125", "gan.batch=8",
            "gan.steps=1", "gan.fid_every=0", "gan.grid_every=0"]
    for stage in (train_extractor, train_gan, synthesize):
        stage.main(["--params", str(ROOT / "params.yaml")] + [a for o in [*paths, *tiny, "mlflow.enabled=false"]
                                                                for a in ("-S", o)])
    return paths


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--classifiers", nargs="+", default=list(CLASSIFIERS), choices=CLASSIFIERS)
    ap.add_argument("--trainsets", nargs="+", default=list(TRAINSETS), choices=TRAINSETS)
    ap.add_argument("--fractions", nargs="+", type=float, default=[1.0, 0.25, 0.1])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--arch", default="resnet10")
    ap.add_argument("--jobs", type=int, default=1, help="arms run at once, one process each")
    ap.add_argument("--summary-only", action="store_true", help="re-summarise arms already run")
    ap.add_argument("--tag", default="", help="suffix for the result files (several reduced runs side by side)")
    ap.add_argument("-S", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="another params override for every stage (repeatable), e.g. downstream.xgboost.n_estimators=100")
    add_folder_args(ap)
    args = ap.parse_args()
    if args.smoke:
        args.classifiers, args.trainsets, args.fractions, args.seeds = list(CLASSIFIERS), list(TRAINSETS), [1.0], [0]
        args.epochs, args.width, args.summary_only, args.tag = 1, 4, False, ""
        args.overrides += ["downstream.xgboost.n_estimators=10", "downstream.bootstrap.samples=5"]
    with folders(args):
        run(args)


def run(args):
    work = args.work / "kermany_run"
    if args.smoke:
        args.shared = args.work / "miniature"
        kermany_miniature(args.shared)
    prepared = kermany(Path(args.shared), work=args.work, workers=1 if args.smoke else 0)
    if args.smoke:
        smoke_inputs(work, prepared)
    lst = lambda xs: "[" + ",".join(str(x) for x in xs) + "]"  # noqa: E731
    needs = ([work / "synthetic/images.npy"] if set(args.trainsets) & set(GROUPS["synthetic"]) else []) + (
        [work / "extractor/extractor.pt"] if "xgboost" in args.classifiers else [])
    missing = [str(p) for p in needs if not p.exists()]
    if missing and not args.summary_only:
        raise SystemExit(f"{', '.join(missing)} missing: run bench/fidelity_kermany.py first (it trains the extractor "
                         "and the GAN and writes the synthetic set)")
    overrides = [f"paths.prepared={prepared}", f"paths.synthetic={work / 'synthetic'}",
                 f"paths.extractor={work / 'extractor'}", f"paths.downstream_metrics={work / 'downstream'}",
                 f"paths.downstream_reports={work / 'downstream_reports'}",
                 f"paths.downstream_summary={work / 'downstream.json'}", f"paths.downstream_report={work / 'downstream.md'}",
                 *arms_overrides(args.classifiers, args.trainsets),
                 f"downstream.fractions={lst(args.fractions)}", f"downstream.seeds={lst(args.seeds)}",
                 f"downstream.cnn.epochs={args.epochs}", f"downstream.cnn.width={args.width}",
                 f"downstream.cnn.arch={args.arch}", "mlflow.enabled=false", *args.overrides]
    argv = ["--params", str(ROOT / "params.yaml")] + [a for o in overrides for a in ("-S", o)]
    arms = [(clf, ts, str(frac), str(seed)) for clf in ([] if args.summary_only else args.classifiers)
            for ts in args.trainsets for frac in args.fractions for seed in args.seeds]
    t0 = time.perf_counter()
    if args.jobs <= 1:
        for arm in arms:
            downstream.main([*argv, "--arm", *arm])
    else:
        run_parallel(arms, argv, args.jobs)
    summary = downstream_summary.main(argv)
    device = resolve_device("auto").type
    out = args.results / f"downstream_kermany_{device}{'_' + args.tag if args.tag else ''}"
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                if k not in ("results", "work", "shared")}
    result = {"smoke": args.smoke, "device": device, "settings": settings,
              "seconds": round(time.perf_counter() - t0, 1), **summary}
    Path(f"{out}.json").write_text(json.dumps(result, indent=2) + "\n")
    shutil.copy(work / "downstream.md", f"{out}.md")
    print(f"-> {out}.json, {out}.md")


def run_parallel(arms, argv, jobs: int) -> None:
    """Each arm in its own ``python -m pipeline.downstream`` process, ``jobs`` at a time, CPU threads shared."""
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // jobs)),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

    def one(arm):
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pipeline.downstream", *argv, "--arm", *arm], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        print(f"{' '.join(arm)}: {'ok' if proc.returncode == 0 else 'FAILED'} in {time.perf_counter() - t:.0f} s",
              flush=True)
        if proc.returncode:
            raise RuntimeError(f"arm {' '.join(arm)} failed:\n{proc.stderr[-3000:]}")

    # CNN arms first: they are the long ones, so the XGBoost arms fill the gaps at the end
    order = sorted(arms, key=lambda a: a[0] != "cnn")
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, order))


if __name__ == "__main__":
    main()
