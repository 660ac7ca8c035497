"""vtt_score: score readers' response files against the visual Turing test's key.

    python -m pipeline.vtt_score RESPONSES.csv [RESPONSES.csv ...] [--params params.yaml] [-S key=value]

Checks every file first (unknown ids, duplicates, missing answers, another export's key version: errors
naming the file and lines), checks the key against the SHA-256 commitment in the blinded manifest, then
reports per reader and pooled: accuracy (exact 95% CI), sensitivity for synthetic, specificity, an exact
binomial test against 50%, accuracy by confidence, inter-reader agreement (Cohen's kappa for two readers,
Fleiss' for more) and a Mann-Whitney U test of realism ratings between real and synthetic images.
Writes paths.vtt_metrics (metrics/vtt.json) and logs it to the pipeline's MLflow run, then renders the run
report again (reports/index.html and summary.json, with the scores) and puts the headline metrics, VTT
accuracy included, on the MLflow parent run.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from common.io import write_json
from evaluation import vtt
from pipeline import reporting
from pipeline.params import parse_stage_args
from pipeline.tracking import numeric_metrics, stage_run


def main(argv=None) -> dict:
    args = parse_stage_args(__doc__, argv, lambda ap: ap.add_argument("responses", nargs="+", type=Path,
                                                                      help="response CSV files, one per reader"))
    p = args.params
    folder = args.path(p["paths"]["vtt"])
    manifest = json.loads((folder / "blinded/manifest.json").read_text())
    key_text = (folder / "key.csv").read_text()
    if vtt.commitment(key_text) != manifest["key_sha256"]:
        raise SystemExit(f"vtt_score: {folder / 'key.csv'} does not match the commitment in the blinded manifest "
                         "(the key was changed after export)")
    key = vtt.read_key(key_text)
    readers: dict[str, list[dict]] = {}
    errors = []
    for path in args.extra.responses:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
        try:
            checked = vtt.check_responses(str(path), rows, key, manifest["key_version"])
        except vtt.ResponseError as e:
            errors.append(str(e))
            continue
        name = checked[0]["reader"] if checked else path.stem
        if name in readers:
            errors.append(f"{path}: reader {name!r} already has a response file")
            continue
        readers[name] = checked
    if errors:
        raise SystemExit("vtt_score: cannot score:\n  " + "\n  ".join(errors))
    result = {"scored": True, "key_version": manifest["key_version"], "images": len(key), **vtt.score(readers)}
    out = args.path(p["paths"]["vtt_metrics"])
    write_json(out, result)
    with stage_run("vtt_score", p, args.root, {"base": p["base"], "vtt": p["vtt"]}) as ml:
        if ml:
            ml.log_metrics(numeric_metrics({"pooled": result["pooled"], "agreement": result.get("agreement", {})},
                                           "vtt."))
            ml.log_artifact(str(out))
    if args.path(p["paths"]["report"]).exists():  # the pipeline has run: add the scores to its report
        reporting.run(args)
    pooled = result["pooled"]
    print(f"vtt_score: {len(readers)} reader(s), pooled accuracy {pooled['accuracy']:.3f} "
          f"(95% CI {pooled['accuracy_95ci'][0]:.3f}-{pooled['accuracy_95ci'][1]:.3f}, binomial p vs 50% "
          f"{pooled['binomial_p_vs_chance']:.3g}) -> {out}")
    return result


if __name__ == "__main__":
    main()
