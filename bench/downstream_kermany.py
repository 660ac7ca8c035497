"""The downstream table on the Kermany chest X-rays: every arm of the downstream stage (classifier x training
set x real fraction x seed) and the summary, using the synthetic set and domain extractor that
bench/fidelity_kermany.py made (run that first). Runs the pipeline's own stage code with -S overrides into
bench/work/kermany_run/, MLflow off.

    python bench/downstream_kermany.py [--fractions 1.0 0.25 0.1] [--seeds 0 1 2] [--epochs 30] [--width 32] [--jobs 1]

``--jobs N`` runs N arms at once, each in its own process (as ``dvc repro`` of the matrix stage would with
parallel stages): the small CNNs leave most of a GPU idle and XGBoost gets the CPU cores shared out.

Prints the Markdown summary and writes bench/results/downstream_kermany_<device>.{json,md}.
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
from pipeline.runtime import resolve_device  # noqa: E402
from _data import kermany  # noqa: E402  (bench/ is on sys.path when run as a script)

WORK = ROOT / "bench/work/kermany_run"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--classifiers", nargs="+", default=["cnn", "xgboost"])
    ap.add_argument("--trainsets", nargs="+", default=list(downstream.TRAINSETS))
    ap.add_argument("--fractions", nargs="+", type=float, default=[1.0, 0.25, 0.1])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--arch", default="resnet10")
    ap.add_argument("--jobs", type=int, default=1, help="arms run at once, one process each")
    ap.add_argument("--summary-only", action="store_true", help="re-summarise arms already run")
    ap.add_argument("--tag", default="", help="suffix for the result files (several reduced runs side by side)")
    args = ap.parse_args()
    if not (WORK / "synthetic/images.npy").exists():
        raise SystemExit("run bench/fidelity_kermany.py first (it trains the GAN and writes the synthetic set)")
    lst = lambda xs: "[" + ",".join(str(x) for x in xs) + "]"  # noqa: E731
    overrides = [f"paths.prepared={kermany(Path(args.shared))}", f"paths.synthetic={WORK / 'synthetic'}",
                 f"paths.extractor={WORK / 'extractor'}", f"paths.downstream_metrics={WORK / 'downstream'}",
                 f"paths.downstream_reports={WORK / 'downstream_reports'}",
                 f"paths.downstream_summary={WORK / 'downstream.json'}", f"paths.downstream_report={WORK / 'downstream.md'}",
                 f"downstream.classifiers={lst(args.classifiers)}", f"downstream.trainsets={lst(args.trainsets)}",
                 f"downstream.fractions={lst(args.fractions)}", f"downstream.seeds={lst(args.seeds)}",
                 f"downstream.cnn.epochs={args.epochs}", f"downstream.cnn.width={args.width}",
                 f"downstream.cnn.arch={args.arch}", "mlflow.enabled=false"]
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
    out = ROOT / f"bench/results/downstream_kermany_{device}{'_' + args.tag if args.tag else ''}"
    result = {"device": device, "settings": vars(args), "seconds": round(time.perf_counter() - t0, 1), **summary}
    Path(f"{out}.json").write_text(json.dumps(result, indent=2) + "\n")
    shutil.copy(WORK / "downstream.md", f"{out}.md")
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
