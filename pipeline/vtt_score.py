"""vtt_score: score readers' response files against the visual Turing test's key.

    python -m pipeline.vtt_score RESPONSES.csv [RESPONSES.csv ...] [--params params.yaml] [-S key=value]

Checks every file first (unknown ids, duplicates, missing answers, another export's key version: errors
naming the file and lines), checks the key against the SHA-256 commitment in the blinded manifest, then
reports per reader and pooled: accuracy (exact 95% CI), sensitivity for synthetic, specificity, an exact
binomial test against 50%, accuracy by confidence, inter-reader agreement (Cohen's kappa for two readers,
Fleiss' for more) and a Mann-Whitney U test of realism ratings between real and synthetic images. Pooled over
several readers (who rate the same images), the CI resamples readers and images and there is no binomial test.
A CI that includes 50% means the study could not show that readers tell real from synthetic, not that they
cannot; an equivalence test (TOST, ``equivalence`` in each block) shows that they cannot beyond
vtt.equivalence_margin: the 90% CI lies inside 0.5 +- margin (pooled: the bootstrap's, and every reader's own
test). The margin is the one the set's manifest committed to at export; another one is refused. The run prints
which, if either, the answers show. Kappa is null, with ``kappa_undefined`` saying why, when every answer is the same
(MLflow gets no kappa).
Writes paths.vtt_metrics (metrics/vtt.json) and logs it to the pipeline's MLflow run, then renders the run
report again (reports/index.html and summary.json, with the scores) and puts the headline metrics, VTT
accuracy included, on the MLflow parent run. The report is built by pipeline/reporting.py, the helper the report
stage runs too (a command imports no stage module).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from common.io import write_json
from common.text import read_utf8
from evaluation import vtt
from pipeline import outputs, reporting
from pipeline.params import parse_stage_args
from pipeline.tracking import numeric_metrics, stage_run


def checked_key(folder: Path) -> tuple[dict[str, dict], dict]:
    """The answer key (id -> row) and the blinded manifest, once the key matches the manifest's commitment."""
    manifest = json.loads((folder / outputs.BLINDED / outputs.MANIFEST).read_text())
    key_text = (folder / outputs.VTT_KEY).read_text()
    if vtt.commitment(key_text) != manifest["key_sha256"]:
        raise SystemExit(f"vtt_score: {folder / outputs.VTT_KEY} does not match the commitment in the blinded manifest "
                         "(the key was changed after export)")
    return vtt.read_key(key_text), manifest


def committed_margin(manifest: dict, param: float) -> float:
    """The equivalence margin the set was exported with (its manifest went to the readers): a margin chosen once
    the answers are in is no test. Sets exported before the manifest carried it: the param, with a note."""
    if "equivalence_margin" not in manifest:
        print(f"vtt_score: this set's manifest predates the equivalence margin; testing vtt.equivalence_margin "
              f"{param:g}, which the export did not record")
        return param
    if manifest["equivalence_margin"] != param:
        raise SystemExit(f"vtt_score: vtt.equivalence_margin is {param:g} but the set was exported with "
                         f"{manifest['equivalence_margin']:g} (its manifest, sent to the readers): the margin is "
                         "fixed before anyone answers; set it back, or export a new set with the new margin")
    return param


def response_rows(path: Path) -> list[dict]:
    """The rows of one response file. It must be UTF-8; the delimiter is the one its header line splits into the
    response columns by: a comma as written, or the semicolon (or tab) of a sheet saved again by Excel in a
    locale whose decimal mark is the comma. A header that splits by none stops in check_responses."""
    try:
        text = read_utf8(path, "response file")
    except ValueError as e:
        raise vtt.ResponseError(str(e)) from None
    header = text.splitlines()[0] if text else ""
    wanted = set(vtt.RESPONSE_COLUMNS) - {"comment"}
    delimiter = next((d for d in (",", ";", "\t") if wanted <= set(header.split(d))), ",")
    return list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter))


def read_responses(files: list[Path], key: dict[str, dict], key_version: str) -> dict[str, list[dict]]:
    """reader -> checked answers, one response file per reader; every problem in every file is reported at once."""
    readers: dict[str, list[dict]] = {}
    errors = []
    for path in files:
        try:
            checked = vtt.check_responses(str(path), response_rows(path), key, key_version)
        except vtt.ResponseError as e:
            errors.append(str(e))
            continue
        reader = checked[0]["reader"] if checked else path.stem
        if reader in readers:
            errors.append(f"{path}: reader {reader!r} already has a response file")
            continue
        readers[reader] = checked
    if errors:
        raise SystemExit("vtt_score: cannot score:\n  " + "\n  ".join(errors))
    return readers


def equivalence_line(equivalence: dict, ci_95_includes_chance: bool) -> str:
    """The equivalence test's outcome in words; when neither a difference nor equivalence is shown, says so."""
    m, (low, high) = equivalence["margin"], equivalence["ci_90"]
    interval = f"90% CI {low:.3f}-{high:.3f}" + (f", TOST p {equivalence['p']:.3g}" if equivalence["p"] is not None
                                                  else ", bootstrap")
    if equivalence["equivalent"]:
        return f"vtt_score: equivalence to chance shown: accuracy within 0.5 +- {m:g} ({interval})"
    return (f"vtt_score: equivalence to chance within 0.5 +- {m:g} not shown ({interval})"
            + ("; the study is inconclusive: too few answers to show either a difference or equivalence"
               if ci_95_includes_chance else "")
            + ("" if equivalence.get("readers_equivalent") is None else
               f"; {equivalence['readers_equivalent']} reader(s) equivalent on their own, every one is needed"))


def main(argv=None) -> dict:
    args = parse_stage_args(__doc__, argv, lambda ap: ap.add_argument("responses", nargs="+", type=Path,
                                                                      help="response CSV files, one per reader"))
    params = args.params
    key, manifest = checked_key(args.path(params["paths"]["vtt"]))
    key_version = manifest["key_version"]
    margin = committed_margin(manifest, float(params["vtt"]["equivalence_margin"]))
    readers = read_responses(args.extra.responses, key, key_version)
    result = {"scored": True, "key_version": key_version, "images": len(key), **vtt.score(readers, margin)}
    out = args.path(params["paths"]["vtt_metrics"])
    write_json(out, result)
    with stage_run("vtt_score", params, args.root, {"base": params["base"], "vtt": params["vtt"]}) as ml:
        if ml:
            ml.log_metrics(numeric_metrics({"pooled": result["pooled"], "agreement": result.get("agreement", {})},
                                           "vtt."))
            ml.log_artifact(str(out))
    if args.path(params["paths"]["report"]).exists():  # the pipeline has run: add the scores to its report
        reporting.run(args)
    pooled = result["pooled"]
    p = pooled["binomial_p_vs_chance"]
    low, high = pooled["accuracy_95ci"]
    print(f"vtt_score: {len(readers)} reader(s), pooled accuracy {pooled['accuracy']:.3f} "
          f"(95% CI {low:.3f}-{high:.3f}, "
          + (f"binomial p vs 50% {p:.3g}" if p is not None else pooled["accuracy_95ci_method"]) + f") -> {out}")
    if low <= 0.5 <= high:
        print(f"vtt_score: the CI includes 50%: this study could not show that readers tell real from synthetic "
              f"(not that they cannot); accuracies up to {high:.3f} fit the answers")
    print(equivalence_line(pooled["equivalence"], low <= 0.5 <= high))
    if "agreement" in result:
        agreement = result["agreement"]
        kappa = agreement["kappa"]
        print(f"vtt_score: {agreement['method']} " + (f"{kappa:.3f}" if kappa is not None else
                                                      f"undefined ({agreement['kappa_undefined']})"))
    return result


if __name__ == "__main__":
    main()
