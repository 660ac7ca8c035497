"""The run report, shared by the report stage (pipeline/report.py) and ``python -m pipeline.vtt_score``
(which renders it again with the readers' scores): the run in one place -> reports/summary.json (headline metrics, DVC metrics) and
reports/index.html (a self-contained page that opens offline), and the headline metrics on the MLflow parent
run so runs compare side by side in the MLflow UI.

The page: the run's identity (data hash, data source, GAN params), the headline numbers, the dataset
(counts per class and split, quarantine reasons, example real images per class), GAN training curves and
sample grids per class, the fidelity table with the extractor named, nearest-neighbour pairs, the downstream
table with 95% CIs and ROC curves, and the visual Turing test export (and its scores once
``python -m pipeline.vtt_score`` has run: that command renders the page again).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from common.images import tile
from common.io import atomic_file, write_json
from evaluation import metrics as M
from pipeline import report_page as H
from pipeline.arms import arm_name, verdict
from pipeline.prepared import dataset_hash, load_split
from pipeline.tracking import log_to_parent, numeric_metrics, stage_run


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _col(rows: list[dict], key: str) -> list[float]:
    return [float(r[key]) if r.get(key) not in (None, "") else float("nan") for r in rows]


# ---------------------------------------------------------------- sections: (summary part, HTML)

def dataset_section(prepared: Path, per_class: int) -> tuple[dict, str]:
    s = _json(prepared / "summary.json") or {}
    splits = s.get("splits", {})
    classes = s.get("classes", [])
    summary = {"images": s.get("prepared"), "quarantined": s.get("quarantined"), "patients": s.get("patients"),
               **{f"{k}_images": v.get("images") for k, v in splits.items()}}
    rows = [(H.esc(k), H.fmt(v.get("images")), H.fmt(v.get("patients")), *(H.fmt(v.get(c)) for c in classes))
            for k, v in splits.items()]
    body = [H.kv_table([("source", s.get("source")), ("kind", s.get("kind")),
                        ("image size", f"{s.get('size')} x {s.get('size')} px, [-1, 1]"),
                        ("files found", s.get("found")), ("prepared", s.get("prepared")),
                        ("quarantined", s.get("quarantined")), ("patients", s.get("patients")),
                        ("split from", s.get("split_from")), ("exact duplicate groups", s.get("duplicate_groups"))]),
            "<h3>Split (by patient, stratified by label)</h3>",
            H.table(("split", "images", "patients", *classes), rows)]
    reasons = s.get("quarantine_reasons", {})
    body.append("<h3>Quarantine</h3>")
    if reasons:
        quarantine = _csv(prepared / "quarantine.csv")
        body.append(H.table(("reason", "files"), ((H.esc(k), H.fmt(v)) for k, v in sorted(reasons.items()))))
        body.append(H.table(("file", "reason"), ((H.esc(r["path"]), H.esc(r["reason"])) for r in quarantine[:50])))
        if len(quarantine) > 50:
            body.append(f'<p class="muted small">... and {len(quarantine) - 50} more in quarantine.csv</p>')
    else:
        body.append("<p>No file was quarantined.</p>")
    if classes and (prepared / "images.npy").is_file():
        train = load_split(prepared, "train")
        figs = []
        for k, name in enumerate(classes):
            idx = np.flatnonzero(train.labels == k)[:per_class]
            if len(idx):
                grid = tile(train.images[idx], ncol=min(len(idx), 8))
                figs.append(H.figure(H.img(H.gray_png(grid), f"real {name}", width=grid.shape[1] * 2),
                                     f"{H.esc(name)}: the first {len(idx)} real training images"))
        body += ["<h3>Example real images per class</h3>", f'<div class="flex">{"".join(figs)}</div>']
    return summary, "".join(body)


def gan_section(reports: Path) -> tuple[dict, str]:
    s = _json(reports / "summary.json") or {}
    losses, fid = _csv(reports / "losses.csv"), _csv(reports / "fid.csv")
    summary = {k: s.get(k) for k in ("steps", "epochs", "fid_domain_best", "fid_domain_last", "generator_step")}
    body = [H.kv_table([("steps (epochs)", f"{s.get('steps')} ({H.fmt(s.get('epochs'), 1)})"),
                        ("training images", s.get("train_images")), ("classes", ", ".join(s.get("classes", [])) or
                                                                      "unconditional"),
                        ("device, precision", f"{s.get('device')}, {s.get('precision')}, CUDA graphs "
                                              f"{s.get('cuda_graphs')}, {s.get('world_size')} process(es)"),
                        ("generator kept", f"step {s.get('generator_step')} (lowest domain FID on val: "
                                           f"{H.fmt(s.get('fid_domain_best'))}; last {H.fmt(s.get('fid_domain_last'))})"),
                        ("throughput, resumes", "on the train_gan MLflow run (not in the page: it depends on the "
                                                "machine, not on the inputs)")])]
    if losses:
        step = _col(losses, "step")
        charts = [H.line_chart({"loss D": (step, _col(losses, "loss_d")), "loss G": (step, _col(losses, "loss_g"))},
                               "Losses", "step"),
                  H.line_chart({"D(x) real": (step, _col(losses, "d_real")),
                                "D(G(z)) fake": (step, _col(losses, "d_fake"))},
                               "Discriminator outputs (mean sigmoid)", "step", y_range=(0, 1))]
        if fid:
            charts.append(H.line_chart({"domain FID (val)": (_col(fid, "step"), _col(fid, "fid_domain"))},
                                       "Domain FID during training", "step"))
        body.append(f'<div class="flex">{"".join(charts)}</div>')
    else:
        body.append("<p>No losses.csv.</p>")
    return summary, "".join(body)


def samples_section(reports: Path) -> str:
    figs = [H.figure(H.img(p, p.stem), f"{H.esc(p.stem.removeprefix('samples_'))}: generated (EMA generator kept)")
            for p in sorted(reports.glob("samples_*.png"))]
    if (reports / "grids/final.png").is_file():
        figs.append(H.figure(H.img(reports / "grids/final.png", "final grid"),
                             "the fixed latents at the end of training, one block of rows per class"))
    return f'<div class="flex">{"".join(figs)}</div>' if figs else "<p>No sample grids.</p>"


FID_KEYS = ("fid", "relative_fid", "kid", "precision", "recall")


def fidelity_section(fid: dict | None, fid_reports: Path) -> tuple[dict, dict, str]:
    if not fid:
        return {}, {}, "<p>No fidelity metrics.</p>"
    summary, rows, missing = {}, [], []
    for name, e in fid["extractors"].items():
        if "unavailable" in e:
            missing.append(f"<p class=note>{H.esc(name)}: not computed ({H.esc(e['unavailable'])}).</p>")
            continue
        summary[name] = {k: e["overall"].get(k) for k in FID_KEYS}
        summary[name]["per_class"] = {c: {k: v.get(k) for k in ("fid", "relative_fid")}
                                      for c, v in e.get("per_class", {}).items()}
        for part, v in {"overall": e["overall"], **e.get("per_class", {})}.items():
            rows.append((H.esc(name), H.esc(part), H.fmt(v.get("fid")), H.fmt(v.get("relative_fid"), 2),
                         H.fmt(v.get("fid_real_halves")),
                         f"{H.fmt(v.get('kid'), 4)} ± {H.fmt(v.get('kid_std'), 4)}", H.fmt(v.get("precision")),
                         H.fmt(v.get("recall")), f"{v.get('n_synthetic')} vs {v.get('n_real')}",
                         H.fmt(v.get("n_half"))))
    memo = {space: {"synthetic_below": m["fraction_synthetic_below"], "heldout_below": m["fraction_heldout_below"]}
            for space, m in fid.get("memorisation", {}).items()}
    body = [f'<p>Synthetic set against the real <b>{H.esc(fid["reference_split"])}</b> split '
            f'({fid["n_synthetic"]} synthetic, {fid["n_reference"]} real; the GAN trained on {fid["n_train"]}).'
            " FID depends on the sample count and the extractor: compare runs only at equal counts with the same "
            "extractor. Relative FID = FID(synthetic, real half B) / FID(real half A, real half B): about 1 means "
            "as close as an independent real sample.</p>",
            H.table(("extractor", "part", "FID", "relative FID", "FID real halves", "KID ± sd", "precision",
                     "recall", "n synthetic vs real", "n per half"), rows), *missing]
    if memo:
        body += ["<h3>Memorisation audit</h3>",
                 "<p>Share of synthetic images closer to a training image than the 1st percentile of the held-out "
                 "real images' distances to the training set (about 1% for a sample of new real images). Much "
                 "more than the held-out share suggests copies: look at the pairs below.</p>",
                 H.table(("space", "synthetic below", "held-out below", "median synthetic distance",
                          "median held-out distance"),
                         ((H.esc(s), f"{100 * m['fraction_synthetic_below']:.2f}%",
                           f"{100 * m['fraction_heldout_below']:.2f}%", H.fmt(m.get("median_synthetic_distance")),
                           H.fmt(m.get("median_heldout_distance"))) for s, m in fid["memorisation"].items()))]
    pairs = sorted(fid_reports.glob("nearest_pairs_*.png"))
    if pairs:
        body += ["<h3>Nearest-neighbour pairs</h3>", '<div class="flex">' + "".join(
            H.figure(H.img(p, p.stem), f"{H.esc(p.stem.removeprefix('nearest_pairs_'))} space: each synthetic image "
                                       "beside its closest training image, closest pairs first") for p in pairs)
                 + "</div>"]
    return summary, memo, "".join(body)


def downstream_section(ds: dict | None, d: dict, roc_dir: Path) -> tuple[dict, str]:
    if not ds:
        return {}, "<p>No downstream summary.</p>"
    summary, body = {}, [
        "<p>Each classifier tested once on the real held-out <b>test</b> split; epoch or trees and the threshold "
        f"chosen on val. Means over seeds {H.esc(d['seeds'])}. Differences are paired by seed (same real subset "
        "and initialisation); 95% CI from a paired bootstrap over test patients.</p>"]
    for key, rows in ds["table"].items():
        clf, frac = key.split(".fraction_")
        part = summary.setdefault(clf, {}).setdefault(f"fraction_{frac}", {})
        for ts, m in rows.items():
            part[ts] = {"roc_auc": m.get(M.ROC_AUC), "accuracy": m.get(M.ACCURACY)}
        body.append(f"<h3>{H.esc(clf)}, real-data fraction {H.esc(frac)}</h3><div class=flex><div>")
        body.append(H.table(("training set", "ROC AUC", "accuracy", "balanced acc.", "sensitivity", "specificity",
                             "F1", "PR AUC", "seeds"),
                            ((H.esc(ts), *(H.fmt(m.get(k)) for k in (M.ROC_AUC, M.ACCURACY, M.BALANCED_ACCURACY,
                                                                     "sensitivity", "specificity", "f1", "pr_auc")),
                              m.get("seeds")) for ts, m in rows.items())))
        diffs = ds["paired_differences"].get(key, {})
        drows = []
        for name, dm in diffs.items():
            a, c = dm[M.ROC_AUC], dm[M.ACCURACY]
            part[name] = {"roc_auc": a["mean"], "roc_auc_ci_low": a["ci"][0], "roc_auc_ci_high": a["ci"][1],
                          "accuracy": c["mean"], "accuracy_ci_low": c["ci"][0], "accuracy_ci_high": c["ci"][1]}
            v = verdict(a)
            cls = v if v in ("helped", "hurt") else ""
            drows.append((H.esc(name), H.ci(a["mean"], a["ci"]), H.ci(c["mean"], c["ci"]),
                          f'<span class="{cls}">{H.esc(v)}</span>'))
        if drows:
            body.append(H.table(("vs real only", "ΔROC AUC [95% CI]", "Δaccuracy [95% CI]", "verdict (AUC)"),
                                drows))
        body.append("</div>")
        seed = d["seeds"][0]
        curves = {}
        for ts in rows:
            roc = _csv(roc_dir / arm_name(clf, ts, float(frac), seed) / "roc.csv")
            if roc:
                curves[ts] = (_col(roc, "fpr"), _col(roc, "tpr"))
        if curves:
            body.append(H.line_chart(curves, f"ROC on test, {clf}, fraction {frac}, seed {seed}",
                                     "false positive rate", "true positive rate", 360, 320, y_range=(0, 1),
                                     diagonal=True))
        body.append("</div>")
    return summary, "".join(body)


def vtt_section(vtt_dir: Path, shown: str, scores: dict | None) -> tuple[dict, str]:
    """``shown``: the folder as params name it (relative to the project)."""
    s = _json(vtt_dir / "summary.json")
    if not s:
        return {}, "<p>No visual Turing test export.</p>"
    counts = s.get("per_truth_and_class", {})
    body = [H.kv_table([("blinded set", f"{shown}/blinded (send this folder)"),
                        ("answer key", f"{shown}/key.csv (keep this, away from the readers)"),
                        ("images", s.get("images")),
                        ("real images from", f"the {s.get('real_split')} split"),
                        ("display size", f"{s.get('display_size')} px"), ("DICOM copies", s.get("dicom")),
                        ("key version", s.get("key_version")), ("key SHA-256 (in the manifest)", s.get("key_sha256"))]),
            H.table(("truth", *sorted({c for v in counts.values() for c in v})),
                    ((H.esc(t), *(H.fmt(v.get(c)) for c in sorted({c for v in counts.values() for c in v})))
                     for t, v in counts.items()))]
    summary = {}
    if scores and scores.get("key_version") == s.get("key_version"):
        pooled = scores["pooled"]
        summary = {"accuracy": pooled["accuracy"], "accuracy_ci_low": pooled["accuracy_95ci"][0],
                   "accuracy_ci_high": pooled["accuracy_95ci"][1], "binomial_p": pooled["binomial_p_vs_chance"],
                   "readers": len(scores["readers"])}
        if "agreement" in scores:
            summary["kappa"] = scores["agreement"]["kappa"]
        cols = ("n", "accuracy", "sensitivity_synthetic", "specificity", "binomial_p_vs_chance")
        body += ["<h3>Readers' scores</h3>",
                 "<p>Accuracy near 50% means the readers could not tell real from synthetic; the exact CI says how "
                 "sure that is with this many images.</p>",
                 H.table(("reader", *cols, "accuracy 95% CI"),
                         ((H.esc(r), *(H.fmt(v.get(k)) for k in cols), H.ci(v["accuracy"], v["accuracy_95ci"]))
                          for r, v in {**scores["readers"], "pooled": pooled}.items()))]
        if "agreement" in scores:
            a = scores["agreement"]
            body.append(f"<p>Agreement between readers: {H.esc(a['method'])} {H.fmt(a['kappa'])} over "
                        f"{a['items']} images.</p>")
    else:
        body.append('<p class="note">Not scored yet: send the blinded folder, then run '
                    "<code>python -m pipeline.vtt_score responses/*.csv</code>, which adds the scores here.</p>")
    return summary, "".join(body)


def headline(summary: dict) -> str:
    """The numbers a reader compares first; every one is in reports/summary.json and on the MLflow parent run
    under the name shown in the small print (dotted path of the JSON)."""
    body = []
    fid, memo = summary.get("fidelity", {}), summary.get("memorisation", {})
    if fid:
        mf = memo.get("features", {})
        body.append(H.table(
            ("extractor", "FID", "relative FID", "KID", "precision", "recall"),
            ((H.esc(name), H.fmt(e["fid"]), H.fmt(e["relative_fid"], 2), H.fmt(e["kid"], 4), H.fmt(e["precision"]),
              H.fmt(e["recall"])) for name, e in fid.items())))
        if mf:
            body.append(f"<p>Memorisation (domain features): {100 * mf['synthetic_below']:.2f}% of synthetic images "
                        f"closer to a training image than the held-out 1st percentile, against "
                        f"{100 * mf['heldout_below']:.2f}% of held-out real images.</p>")
    rows = []
    for clf, fracs in summary.get("downstream", {}).items():
        for frac, part in fracs.items():
            d = part.get("real_synthetic-real")
            rows.append((H.esc(clf), H.esc(frac.removeprefix("fraction_")),
                         *(H.fmt(part.get(ts, {}).get("roc_auc")) for ts in ("real", "real_synthetic", "synthetic",
                                                                             "real_classic")),
                         H.ci(d["roc_auc"], (d["roc_auc_ci_low"], d["roc_auc_ci_high"])) if d else "n/a"))
    if rows:
        body.append(H.table(("classifier", "real fraction", "AUC real", "AUC real+synthetic", "AUC synthetic",
                             "AUC real+classic aug.", "ΔAUC real+synthetic vs real [95% CI]"), rows))
    v = summary.get("vtt")
    if v:
        acc = H.ci(v["accuracy"], (v["accuracy_ci_low"], v["accuracy_ci_high"]))
        body.append(f"<p>Visual Turing test: pooled reader accuracy {acc} ({v['readers']} reader(s); "
                    "0.5 = cannot tell).</p>")
    else:
        body.append("<p>Visual Turing test: not scored yet.</p>")
    body.append('<p class="muted small">All numbers: reports/summary.json, <code>dvc metrics show</code>, and the '
                "MLflow parent run (metric names are the JSON's dotted paths, e.g. "
                "<code>fidelity.medaug-domain.fid</code>, <code>downstream.cnn.fraction_1.0.real_synthetic-real."
                "roc_auc</code>).</p>")
    return "".join(body)


# ---------------------------------------------------------------- the stage

def build(args) -> dict:
    """Write the summary and the page from the outputs on disk; returns the summary."""
    p = args.params
    paths, r = p["paths"], p["report"]
    prepared = args.path(paths["prepared"])
    # Only what the stage's inputs decide: the page is a DVC out, so no date, git commit or experiment name
    # (DVC's run cache may restore it into another experiment with the same inputs). Those are tags of the
    # MLflow parent run, which the page names.
    identity = [("data hash (prepared set)", dataset_hash(prepared)),
                ("data source", p["data"]["source"]),
                ("GAN", ", ".join(f"{k}={p['gan'][k]}" for k in ("num_classes", "width", "steps", "batch", "loss",
                                                                 "diffaugment", "ema_decay", "lr_g", "lr_d"))),
                ("git commit, DVC experiment", "tags of this run's MLflow parent run (pipeline_key, git_commit, "
                                               "dvc_exp_name)")]
    data, data_html = dataset_section(prepared, int(r["examples_per_class"]))
    gan, gan_html = gan_section(args.path(paths["gan_reports"]))
    fid, memo, fid_html = fidelity_section(_json(args.path(paths["fidelity_metrics"])),
                                           args.path(paths["fidelity_reports"]))
    down, down_html = downstream_section(_json(args.path(paths["downstream_summary"])), p["downstream"],
                                         args.path(paths["downstream_reports"]))
    vtt, vtt_html = vtt_section(args.path(paths["vtt"]), paths["vtt"], _json(args.path(paths["vtt_metrics"])))
    summary = {"data": data, "gan": gan, "fidelity": fid, "memorisation": memo, "downstream": down}
    if vtt:
        summary["vtt"] = vtt
    sections = [("headline", "Headline metrics", headline(summary)),
                ("data", "Dataset", data_html), ("training", "GAN training", gan_html),
                ("samples", "Samples per class", samples_section(args.path(paths["gan_reports"]))),
                ("fidelity", "Fidelity", fid_html), ("downstream", "Downstream classifiers", down_html),
                ("vtt", "Visual Turing test", vtt_html)]
    page = H.page("medaug run report", sections, H.kv_table(identity))
    write_json(args.path(paths["report_summary"]), summary)
    with atomic_file(args.path(paths["report"])) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return summary


def log(p: dict, root: Path, summary: dict, files: list[Path]) -> None:
    """The headline metrics and the page on a ``report`` child run and on the pipeline's parent run."""
    with stage_run("report", p, root, {"report": p["report"]}) as ml:
        if ml:
            flat = numeric_metrics(summary)
            ml.log_metrics(flat)
            for f in files:
                ml.log_artifact(str(f))
            log_to_parent(ml, flat, files)


def run(args) -> dict:
    """Build the page and summary, and log them; returns the summary."""
    summary = build(args)
    files = [args.path(args.params["paths"][k]) for k in ("report", "report_summary")]
    log(args.params, args.root, summary, files)
    print(f"report: {files[0]}, {files[1]}")
    return summary
