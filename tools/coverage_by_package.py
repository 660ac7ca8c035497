"""Line coverage per package from the .coverage file that `make coverage` leaves (coverage.py's API): the
statements run and missed of each package's modules, summed, and the total. Code run in the tests' own
processes counts; stages the tests start as subprocesses (`dvc repro`, bench smokes) do not, so the pipeline/
figure is a lower bound.

    python tools/coverage_by_package.py [--data .coverage] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import coverage

ROOT = Path(__file__).resolve().parents[1]


def by_package(data_file: str) -> dict[str, dict]:
    cov = coverage.Coverage(data_file=data_file)
    cov.load()
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for path in cov.get_data().measured_files():
        if not Path(path).resolve().is_relative_to(ROOT) or Path(path).suffix != ".py":
            continue   # the report's Jinja2 template is measured too (its compiled code names the .j2 file)
        rel = Path(path).resolve().relative_to(ROOT)
        _, statements, _, missing, _ = cov.analysis2(path)
        for key in (rel.parts[0], "total"):
            totals[key][0] += len(statements)
            totals[key][1] += len(missing)
    return {k: {"statements": s, "missed": m, "covered_percent": round(100 * (s - m) / s, 1) if s else None}
            for k, (s, m) in sorted(totals.items(), key=lambda kv: (kv[0] == "total", kv[0]))}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / ".coverage"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    res = by_package(args.data)
    for name, r in res.items():
        print(f"{name:12s} {r['statements']:6d} statements {r['missed']:6d} missed {r['covered_percent']:5.1f}%")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
