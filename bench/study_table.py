"""The cross-experiment view of the Kermany study (bench/study.py): one row per real fraction, classifier and
training set, read from the study project's DVC experiments.

The experiments are listed by `dvc exp show --json` (name, rev, params). Their metrics files are read whole at
each experiment's rev with dvc.api.read (`dvc exp show` keeps only the numbers, and the 95% CIs are lists):
metrics/downstream.json (means over seeds, paired differences against real only and against real_classic with
their CIs) and metrics/fidelity.json (the GAN's domain FID, relative FID, precision/recall, memorisation audit).

    python bench/study_table.py [--project bench/work/kermany_study] [--smoke]

Writes <results>/kermany_study.md, kermany_study.json and kermany_study_delta_auc.png (ΔAUC against the real
fraction with 95% CIs, real_synthetic next to real_classic and real_synthetic_classic where run, one panel per
classifier). The study's experiments are named fraction-<f>; any other (the scale-up experiments of
bench/kermany_study.yaml) is set beside the study experiment of its fraction in a section of its own, and kept out
of the per-fraction table. The plot has a row of its own for each recipe of scale-up experiments run at two or
more fractions (the same settings apart from the fraction, the ones that scale with it and the arms). The paired
differences against real_classic, of every experiment that has them, get a section of their own.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline.arms import REAL_ONLY  # noqa: E402
from pipeline.verdict import identical_models, seed_interval, verdict  # noqa: E402
from _data import WORK, add_folder_args, dvc_env, dvc_experiments, folders  # noqa: E402

SETS = ("real", "real_classic", "real_synthetic", "synthetic", "real_synthetic_classic")
ANCHOR = {"source": "MedMNIST+ (Doerrich et al. 2024), PneumoniaMNIST test split = the official Kermany test images",
          "model": "ResNet-18 at 64 px", "roc_auc": 0.943, "accuracy": 0.860}
HONESTY = """\
## What the numbers cover

- **Test split.** The 624 images of the official Kermany test folder (chest_xray/test), read once per arm after
  every choice was made: CNN epoch, XGBoost rounds and both decision thresholds were chosen on the validation
  split, which was carved from the train folder by patient. The GAN's best checkpoint (generator.pt) was
  chosen by domain FID against the same validation split. No setting of this study was tuned on the test
  images: the sizes in bench/kermany_study.yaml were fixed before it ran, from CPU cost alone, and each
  experiment beside the study was fixed before it ran, from CPU cost and validation figures (its reasons are
  in the yaml).
- **Strict low-data.** data.train_fraction keeps that share of the training patients (stratified, seeded) in
  the prepare stage: the domain extractor, the GAN and every classifier of an experiment see the same reduced
  real set; validation and test are the same at every fraction.
- **The CIs.** Every arm is run with {seeds} seeds. "ΔAUC [95% CI]" is the seed-averaged paired difference against
  real only, or in its own section against real_classic (same seed: same real subset and initialisation); its CI is
  a paired bootstrap over *test patients* (the same resample for both arms), so it covers test-set sampling with the
  seeds held fixed. "(seeds [...])" is the 95% t interval over the {seeds} seeds' differences; it covers the
  variation between trainings with the test set held fixed. Neither covers both, so the verdict calls "helped" or
  "hurt" only when both exclude 0 on the same side. With {seeds} seeds the t interval is wide, so this rule is
  strict. XGBoost draws nothing at random (no row or column subsampling) except the augmented copies of real_classic
  and real_synthetic_classic, so without augmentation it is deterministic: its {seeds} seeds give one model, marked
  "(seeds: one model)" (in summaries written before downstream_summary marked it, found by the zero-width interval
  over seeds), and its only interval is the bootstrap over test patients, on which its verdict rests alone.
  Accuracy, sensitivity and specificity use the threshold chosen on validation.
- **Known shift.** The Kermany train and test folders differ (the test folder was curated separately; the
  {positive} share: {train_share:.1%} of train, {test_share:.1%} of test) and {shared_ids} patient ids occur in
  more than one published folder, which the files cannot tell apart from ids re-used per folder. The
  published split is kept as released. A threshold chosen on validation (from the train folder) therefore
  tends to give high sensitivity and low specificity on the test folder; ROC AUC does not depend on it.
- **Fidelity figures.** The study's runs ran code a035e4e: their precision/recall compare every synthetic image
  with every validation image (unequal sizes; k-NN radii shrink with n), and their held-out memorisation share
  is that of the images that set the threshold (the 1st percentile: 1% by construction). Since 1ff3f11 the
  stage takes precision/recall at equal sizes, beside two real halves' values as their scale, and measures the
  held-out share on another half of the validation patients, both shares with CIs
  (bench/results/fidelity_kermany_cpu.json shows them for a 3000-step generator). Relative FIDs compare across
  the fractions: one validation split, one n_half. Each fraction, and each study project, trains its own domain
  extractor, so both FIDs of a relative FID are shown: a change in the real halves' FID (the denominator) is the
  extractor's, not the GAN's. Since ab9f99f the stage's relative FID is the median over draws of the halves with
  the range of 95% of them; runs from before took one draw. Those of this study project are redrawn with the
  stage's draws (†); those carried over from earlier projects, whose DVC caches are gone, keep their one draw,
  marked: such a draw may sit anywhere in the range (the last section sets redrawn runs' one draw beside their
  median).
"""


def experiments(project: Path) -> list[dict]:
    """Every experiment of the study project: name, rev and its full params and metrics files."""
    import dvc.api

    out = []
    for rev in dvc_experiments(project, dvc_env(project)):
        params = rev["data"]["params"]["params.yaml"]["data"]
        read = lambda path: json.loads(dvc.api.read(path, repo=str(project), rev=rev["rev"]))  # noqa: E731
        out.append({"name": rev["name"], "rev": rev["rev"], "baseline": rev["baseline"],
                    "fraction": float(params["data"]["train_fraction"]), "params": params,
                    "downstream": read(params["paths"]["downstream_summary"]),
                    "fidelity": read(params["paths"]["fidelity_metrics"]),
                    "prepared": read(f"{params['paths']['prepared']}/summary.json")})
    return sorted(out, key=lambda e: e["fraction"])


def delta(difference: dict) -> dict:
    """A summary's paired difference as a table row's ΔAUC keys."""
    auc = difference["roc_auc"]
    return {"delta_auc": auc["mean"], "delta_auc_ci": auc["ci"], "delta_auc_seed_spread": auc.get("seed_spread")}


def tabulate(exps: list[dict]) -> dict:
    """Rows (ΔAUC against real only), the paired differences against real_classic (``vs_classic``; summaries
    written since downstream_summary makes them) and the GAN of each experiment."""
    rows, vs_classic, gan = [], [], []
    for e in exps:
        table, diffs = e["downstream"]["table"], e["downstream"]["paired_differences"]
        for key, sets in table.items():
            clf = key.split(".fraction_")[0]
            for ts in SETS:
                if ts not in sets:
                    continue
                m = sets[ts]
                row = {"fraction": e["fraction"], "classifier": clf, "training_set": ts, "seeds": m["seeds"],
                       **{k: m[k] for k in ("roc_auc", "accuracy", "sensitivity", "specificity")}}
                if f"{ts}-real" in diffs[key]:
                    row.update(delta(diffs[key][f"{ts}-real"]))
                rows.append(recalled(row))
            vs_classic += [recalled({"experiment": e["name"], "fraction": e["fraction"], "classifier": clf,
                                     "comparison": name, "seeds": sets[name.split("-")[0]]["seeds"], **delta(d)})
                           for name, d in diffs[key].items() if name.split("-")[1] != "real"]
        dom = e["fidelity"]["extractors"]["medaug-domain"]["overall"]
        mem = e["fidelity"]["memorisation"]
        splits = e["prepared"]["splits"]
        gan.append({"fraction": e["fraction"], "experiment": e["name"], "rev": e["rev"][:7], "code": e["code"],
                    "train_images": splits["train"]["images"], "train_patients": splits["train"]["patients"],
                    "val_images": splits["val"]["images"], "test_images": splits["test"]["images"],
                    "domain_fid": dom["fid"], "relative_fid": dom["relative_fid"],
                    "relative_fid_range": dom.get("relative_fid_range"),
                    "relative_fid_draws": dom.get("relative_fid_draws", 1),   # one draw before 100 became the default
                    "fid_synthetic_vs_real_half": dom.get("fid_synthetic_vs_real_half"),
                    "fid_real_halves": dom.get("fid_real_halves"), "precision": dom["precision"], "recall": dom["recall"],
                    "memorisation_synthetic_below": mem["features"]["fraction_synthetic_below"],
                    "memorisation_heldout_below": mem["features"]["fraction_heldout_below"],
                    "memorisation_percentile": mem["features"]["percentile"]})
    return {"rows": rows, "vs_classic": vs_classic, "gan": gan, "shift": shift(exps[-1]["prepared"]) if exps else {}}


def code_commit(project: Path, baseline: str) -> str:
    """The commit of this repository an experiment ran: the study project's baseline commit sits on top of it and
    changes params.yaml only. A baseline that changes code as well (a project whose code was brought up to date
    by hand) holds its own code: then that commit, marked as the project's."""
    git = lambda *a: subprocess.run(["git", *a], cwd=project, check=True, capture_output=True, text=True)  # noqa: E731
    if git("diff", "--name-only", f"{baseline}~1", baseline).stdout.split() in ([], ["params.yaml"]):
        return git("rev-parse", f"{baseline}~1").stdout.strip()[:7]
    return f"{baseline[:7]} (a study project commit)"


def carry_over(res: dict, previous: dict) -> dict:
    """Add the fractions and the scale-up experiments this project has not run from an earlier study_table JSON,
    each kept with the experiment, rev and code commit it came from (an earlier study project whose experiments
    are gone); verdicts are called again with this code's rule."""
    have = {g["fraction"] for g in res["gan"]}
    gan = [{**g, "code": g.get("code", previous.get("code", "?")[:7]), "carried_over": True}
           for g in previous["gan"] if g["fraction"] not in have]
    rows = [recalled(r) for r in previous["rows"] if r["fraction"] not in have]
    vs_classic = [recalled(r) for r in previous.get("vs_classic", []) if r["fraction"] not in have]
    ran = {exp["gan"]["experiment"] for exp in res["scale_up"]}
    scale_up = [{**exp, "rows": [recalled(r) for r in exp["rows"]],
                 "vs_classic": [recalled(r) for r in exp.get("vs_classic", [])],
                 "gan": {**exp["gan"], "carried_over": True}}
                for exp in previous.get("scale_up", []) if exp["gan"]["experiment"] not in ran]
    by_fraction = lambda r: r["fraction"]   # noqa: E731
    return {**res, "rows": sorted(res["rows"] + rows, key=by_fraction),
            "vs_classic": sorted(res.get("vs_classic", []) + vs_classic, key=by_fraction),
            "gan": sorted(res["gan"] + gan, key=by_fraction), "shift": res["shift"] or previous["shift"],
            "scale_up": sorted(res["scale_up"] + scale_up, key=lambda e: (e["fraction"], e["gan"]["experiment"]))}


def recalled(row: dict) -> dict:
    """A row with its verdict called (again, for a carried-over one); a zero-width interval over several seeds (in
    a summary written before downstream_summary marked one model) is marked as one model."""
    if "delta_auc" not in row:
        return row
    spread = row.get("delta_auc_seed_spread") or {}
    low, high = spread.get("ci") or (None, None)
    if spread.get("n", 0) > 1 and low is not None and low == high:
        row = {**row, "delta_auc_seed_spread": {**spread, "identical_models": True}}
    return {**row, "verdict": verdict(row_difference(row))}


def shift(prepared: dict) -> dict:
    """The second class's share in train and test, and the patient ids found in several published splits."""
    positive = prepared["classes"][-1]
    share = {s: prepared["splits"][s][positive] / prepared["splits"][s]["images"] for s in ("train", "test")}
    return {"positive": positive, "train_share": share["train"], "test_share": share["test"],
            "shared_ids": prepared.get("patients_in_several_published_splits", 0)}


RELATIVE = ("relative FID, median [95% of the draws] or one draw (FID of a synthetic half / of two real halves, "
            "medians where drawn; † redrawn)")


def relative_cell(g: dict) -> str:
    """Relative FID, the median over draws of the halves with the range of 95% of them (or "one draw": a run
    from before the stage drew more than once, not redrawn), with its two FIDs where the run recorded them: each
    study project trains its own domain extractor, so a change across projects can come from the real halves'
    FID (the denominator) alone. † marks figures bench/relative_fid_spread.py redrew with the stage's draws."""
    if g.get("relative_fid") is None:
        return fmt(None)
    cell = fmt(g["relative_fid"], 2)
    if g.get("relative_fid_range"):
        cell += f" [{fmt(g['relative_fid_range'][0], 2)}, {fmt(g['relative_fid_range'][1], 2)}]"
    else:
        cell += ", one draw"
    real = g.get("fid_real_halves")
    synthetic = g.get("fid_synthetic_vs_real_half") or (real and g["relative_fid"] * real)   # one draw: their ratio
    if real is not None:
        cell += f" ({fmt(synthetic)} / {fmt(real)})"
    return cell + (" †" if g.get("relative_fid_redrawn") else "")


def redraw(gan: dict, spread: dict) -> dict:
    """A GAN row whose fidelity stage took one draw, with relative FID and its FIDs as bench/relative_fid_spread.py
    redrew them at the same rev (the figures the stage gives now); the one draw is kept beside them."""
    e = spread["experiments"].get(gan["experiment"])
    if gan.get("relative_fid_draws", 1) > 1 or gan.get("carried_over") or not e or e["rev"] != gan["rev"]:
        return gan
    return {**gan, "relative_fid_one_draw": gan["relative_fid"], "relative_fid": e["relative_fid"]["median"],
            "relative_fid_range": [e["relative_fid"]["p2.5"], e["relative_fid"]["p97.5"]],
            "relative_fid_draws": e["draws"], "relative_fid_redrawn": True,
            "fid_synthetic_vs_real_half": e["fid_synthetic_vs_real_half"]["median"],
            "fid_real_halves": e["fid_real_halves"]["median"]}


def fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def delta_cell(row: dict) -> str:
    """ΔAUC against the baseline [95% CI over test patients] (over seeds: [95% t], or "one model" where the seeds
    trained one model on both sides) of a table row; empty for real only."""
    if "delta_auc" not in row:
        return ""
    difference = row_difference(row)
    seeds = seed_interval(difference)
    over_seeds = ("seeds: one model" if identical_models(difference)
                  else f"seeds [{fmt(seeds[0])}, {fmt(seeds[1])}]")
    return f"{fmt(row['delta_auc'])} [{fmt(row['delta_auc_ci'][0])}, {fmt(row['delta_auc_ci'][1])}] ({over_seeds})"


def row_difference(row: dict) -> dict:
    """A table row's ΔAUC as the paired difference pipeline.verdict reads (rows carried over included)."""
    return {"ci": row["delta_auc_ci"], "seeds": row["seeds"], **(
        {"seed_spread": row["delta_auc_seed_spread"]} if row.get("delta_auc_seed_spread") else {})}


def markdown(res: dict) -> str:
    names = ", ".join(f"{g['experiment']} (rev {g['rev']}, code {g['code']}"
                      + (", carried over from an earlier study project" if g.get("carried_over") else "") + ")"
                      for g in res["gan"])
    lines = ["# The Kermany low-data study: do synthetic images help, and when?", "",
             f"Experiments {names}; code = the commit of this repository each ran. Settings: "
             "bench/kermany_study.yaml. Means over seeds; Δ = paired difference against real only.", "",
             "The plot (kermany_study_delta_auc.png) draws ΔAUC against the real fraction: a row for the study, "
             "then one for each recipe of the scale-up experiments run at two or more fractions: "
             + ("; ".join(label for label, _ in recipes(res)[1:]) or "none yet") + ".", ""]
    for clf in sorted({r["classifier"] for r in res["rows"]}):
        lines += [f"## {clf}", "", "| real fraction | training set | ROC AUC | accuracy | sensitivity | specificity | "
                  "ΔAUC vs real [95% CI] | verdict |", "|---|---|---|---|---|---|---|---|"]
        for r in (r for r in res["rows"] if r["classifier"] == clf):
            lines.append(f"| {r['fraction']:g} | {r['training_set']} | {fmt(r['roc_auc'])} | {fmt(r['accuracy'])} | "
                         f"{fmt(r['sensitivity'])} | {fmt(r['specificity'])} | {delta_cell(r)} | "
                         f"{r.get('verdict', '')} |")
        lines.append("")
    lines += ["## The GAN at each fraction (domain extractor; reference: the validation split)", "",
              f"| real fraction | train images (patients) | domain FID | {RELATIVE} | precision | recall | "
              f"memorised: synthetic / held-out below the {fmt(res['gan'][0]['memorisation_percentile'], 1) if res['gan'] else ''}th "
              "percentile train distance |", "|---|---|---|---|---|---|---|"]
    for g in res["gan"]:
        lines.append(f"| {g['fraction']:g} | {g['train_images']} ({g['train_patients']}) | {fmt(g['domain_fid'], 2)} | "
                     f"{relative_cell(g)} | {fmt(g['precision'])} | {fmt(g['recall'])} | "
                     f"{fmt(g['memorisation_synthetic_below'])} / {fmt(g['memorisation_heldout_below'])} |")
    ours = [r for r in res["rows"] if r["classifier"] == "cnn" and r["training_set"] in REAL_ONLY
            and r["fraction"] == 1.0]
    lines += vs_classic_section(res) + scale_up_section(res) + spread_section(res)
    lines += ["", "## Against the published anchor", "",
              f"{ANCHOR['model']} ({ANCHOR['source']}): ROC AUC {ANCHOR['roc_auc']}, accuracy {ANCHOR['accuracy']}. "
              + (f"Our CNN on real images only at fraction 1.0 (mean of {ours[0]['seeds']} seeds): "
                 + "; ".join(f"{r['training_set']}: ROC AUC {fmt(r['roc_auc'])}, accuracy {fmt(r['accuracy'])}"
                             for r in ours) + "." if ours else "Fraction 1.0 has not been run.")
              + "".join(f" With the CNN settings of {', '.join(names)} (in their sections), {ts}: ROC AUC {auc}, "
                        f"accuracy {acc}." for (ts, auc, acc), names in real_only_cnn(res).items()), "",
              HONESTY.format(**res["shift"], seeds=max((r["seeds"] for r in res["rows"]), default=0)), "## Reproduce", "", "    python bench/study.py --shared ../shared    # hours on 2 CPU cores",
              "    python bench/study_table.py", ""]
    return "\n".join(lines)


def vs_classic_section(res: dict) -> list[str]:
    """The paired differences against classic augmentation, of the study and the scale-up experiments alike."""
    found = res.get("vs_classic", []) + [r for exp in res.get("scale_up", []) for r in exp.get("vs_classic", [])]
    if not found:
        return []
    return ["", "## Synthetic images against classic augmentation (paired, same seeds)", "",
            "Does a synthetic set beat classic augmentation (real_synthetic - real_classic), or add to it "
            "(real_synthetic_classic - real_classic: real and synthetic images, all augmented)? ΔAUC as in the "
            "tables above, with real_classic as the baseline; \"helped\": the set beat real_classic.", "",
            "| experiment | real fraction | classifier | set - baseline | ΔAUC [95% CI] | verdict |",
            "|---|---|---|---|---|---|"] + [
        f"| {r['experiment']} | {r['fraction']:g} | {r['classifier']} | {r['comparison']} | {delta_cell(r)} | "
        f"{r['verdict']} |" for r in found]


def spread_section(res: dict) -> list[str]:
    """Relative FID redrawn (bench/relative_fid_spread.py) for runs whose fidelity stage took one draw."""
    if "relative_fid_spread" not in res:
        return []
    s = res["relative_fid_spread"]
    q = lambda d, n=2: f"{fmt(d['median'], n)} [{fmt(d['p2.5'], n)}, {fmt(d['p97.5'], n)}]"  # noqa: E731
    one_draw = {g["experiment"]: g.get("relative_fid_one_draw")
                for g in res["gan"] + [exp["gan"] for exp in res.get("scale_up", [])]}
    lines = ["", "## Relative FID over draws of the halves (bench/relative_fid_spread.py)", "",
             "The fidelity stage gives relative FID as the median over `fidelity.relative_fid_draws` draws of two "
             "real val halves and a synthetic subset, with the range of 95% of the draws. Runs from before it took "
             "one draw, which moves several-fold. The script (without --draws) makes the stage's draws, the same "
             "seeds, on each experiment's own features: then the figures marked † in the tables above are the ones "
             "the stage gives now. Median [2.5th, 97.5th percentile] over the draws:", "",
             "| experiment | draws | n_half | relative FID | the stage's one draw | FID synthetic half | "
             "FID real halves |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {name} (rev {e['rev']}) | {e['draws']} | {e['n_half']} | {q(e['relative_fid'])} | "
              f"{fmt(one_draw.get(name), 2)} | {q(e['fid_synthetic_vs_real_half'], 3)} | {q(e['fid_real_halves'], 3)} |"
              for name, e in s["experiments"].items()]
    if s["paired"]:
        lines += ["", "Draw by draw (the same real halves and synthetic rows for both): "
                  + "; ".join(f"{p['a']} / {p['b']}: ratio {q(p['ratio_a_over_b'])}, {p['a']} lower in "
                              f"{p['share_a_lower']:.0%} of the draws" for p in s["paired"]) + "."]
    return lines


def real_only_cnn(res: dict) -> dict[tuple[str, str, str], list[str]]:
    """(training set, ROC AUC, accuracy) of the CNN arms on real images only (real, real_classic) at fraction
    1.0 -> the scale-up experiments with a CNN of their own that ran them (one arm, restored from DVC's run cache,
    where their CNN settings are the same). An experiment that changes only the GAN has the study's real-only
    arms, already on the anchor line."""
    out: dict[tuple[str, str, str], list[str]] = {}
    for exp in (e for e in res.get("scale_up", []) if e["fraction"] == 1.0
                and any(k.startswith("downstream.cnn.") for k in e["settings"])):
        for r in exp["rows"]:
            if r["classifier"] == "cnn" and r["training_set"] in REAL_ONLY:
                key = (r["training_set"], fmt(r["roc_auc"]), fmt(r["accuracy"]))
                out.setdefault(key, []).append(exp["gan"]["experiment"])
    return out


def scale_up_section(res: dict) -> list[str]:
    """Each scale-up experiment beside the study experiment of the same fraction: its settings, every arm it
    ran, and its GAN."""
    lines = []
    for exp in res.get("scale_up", []):
        base = {(r["classifier"], r["training_set"]): r for r in res["rows"] if r["fraction"] == exp["fraction"]}
        gan = next((g for g in res["gan"] if g["fraction"] == exp["fraction"]), None)
        settings = ", ".join(f"{k}={v}" for k, v in exp["settings"].items()) or "none"
        against = ("the study project's baseline (this project has no fraction-{f:g} experiment)"
                   if exp.get("settings_against") == "baseline" else "the study's").format(f=exp["fraction"])
        lines += ["", f"## Beside the study at fraction {exp['fraction']:g}: {exp['gan']['experiment']} "
                  f"(rev {exp['gan']['rev']}, code {exp['gan']['code']}"
                  + (", carried over from an earlier study project" if exp["gan"].get("carried_over") else "") + ")",
                  "", f"Settings on top of {against}: {settings}. The study column is fraction-{exp['fraction']:g}.",
                  "",
                  "| classifier | training set | ROC AUC: study → this experiment | accuracy | sensitivity | "
                  "specificity | ΔAUC vs real [95% CI] | verdict |", "|---|---|---|---|---|---|---|---|"]
        for r in exp["rows"]:
            was = base.get((r["classifier"], r["training_set"]))
            lines.append(f"| {r['classifier']} | {r['training_set']} | {fmt(was and was['roc_auc'])} → "
                         f"{fmt(r['roc_auc'])} | {fmt(r['accuracy'])} | {fmt(r['sensitivity'])} | "
                         f"{fmt(r['specificity'])} | {delta_cell(r)} | {r.get('verdict', '')} |")
        if gan and gan.get("code") != exp["gan"]["code"]:
            lines += ["", f"The study's fraction-{exp['fraction']:g} ran code {gan.get('code')}, this experiment code "
                      f"{exp['gan']['code']}: a figure whose definition changed in between (see \"Fidelity figures\" "
                      "below) does not compare across the two rows."]
        lines += ["", f"| GAN | domain FID | {RELATIVE} | precision | recall | memorised: synthetic / held-out |",
                  "|---|---|---|---|---|---|"]
        for label, g in ((f"fraction-{exp['fraction']:g}", gan), (exp["gan"]["experiment"], exp["gan"])):
            if g:
                lines.append(f"| {label} | {fmt(g['domain_fid'], 2)} | {relative_cell(g)} | "
                             f"{fmt(g['precision'])} | {fmt(g['recall'])} | {fmt(g['memorisation_synthetic_below'])} "
                             f"/ {fmt(g['memorisation_heldout_below'])} |")
    return lines


def flat(params: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in params.items():
        out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def scale_up_results(extra: list[dict], in_study: list[dict], project: Path) -> list[dict]:
    """The tabulated scale-up experiments, each with the params it ran with that differ from the study
    experiment of its fraction, or from the project's baseline when that experiment ran in an earlier project
    (read from the experiments and the baseline commit, not from the settings file)."""
    out = []
    for e in sorted(extra, key=lambda e: (e["fraction"], e["name"])):
        study = next((s for s in in_study if s["fraction"] == e["fraction"]), None)
        own = flat(baseline_params(project, e["baseline"]))   # what its own baseline commit set: the recipe's key
        params = flat(e["params"])
        differ = lambda base: {k: v for k, v in params.items()   # noqa: E731
                               if base.get(k) != v and not k.startswith("paths.")}
        table = tabulate([e])
        out.append({"fraction": e["fraction"], "settings": differ(flat(study["params"]) if study else own),
                    "rows": table["rows"], "recipe_settings": differ(own),
                    "vs_classic": table["vs_classic"], "gan": table["gan"][0],
                    **({} if study else {"settings_against": "baseline"})})
    return out


def baseline_params(project: Path, baseline: str) -> dict:
    """The study project's params.yaml at an experiment's baseline commit (the study's common settings)."""
    return yaml.safe_load(subprocess.run(["git", "show", f"{baseline}:params.yaml"], cwd=project, check=True,
                                         capture_output=True, text=True).stdout)


# Settings that scale with the real fraction (bench/kermany_study.yaml's per_fraction keys, and the fraction
# itself) or only pick arms: experiments that differ in nothing else share a recipe, and the plot draws each recipe
# run at two or more fractions.
PER_FRACTION = ("data.train_fraction", "gan.fid_every", "downstream.cnn.epochs")


def recipe(exp: dict) -> tuple[tuple, tuple]:
    """(the recipe, its per-fraction settings) of a scale-up experiment, from its params against its own baseline
    commit (``settings`` is against the study experiment of its fraction, which may have run at another baseline;
    entries carried over from an older JSON have nothing else)."""
    settings = exp.get("recipe_settings", exp["settings"])
    pick = lambda keep: tuple(sorted((k, json.dumps(v)) for k, v in settings.items() if keep(k)))   # noqa: E731
    return (pick(lambda k: k not in PER_FRACTION and not k.startswith("downstream.arms.")),
            pick(lambda k: k in PER_FRACTION))


def recipes(res: dict) -> list[tuple[str, list[dict]]]:
    """(label, rows) for the study and for every recipe of scale-up experiments run at two or more fractions. At a
    fraction several experiments of one recipe (the same GAN, other arms) give each (classifier, set) once: the
    experiment with the most rows first, joined only by those with the same per-fraction settings (another FID
    cadence picks another generator; other CNN epochs train another CNN)."""
    groups: dict[tuple, list[dict]] = {}
    for exp in res.get("scale_up", []):
        groups.setdefault(recipe(exp)[0], []).append(exp)
    out = [("study (bench/kermany_study.yaml: common, per_fraction)", res["rows"])]
    for key, exps in groups.items():
        if not key or len({e["fraction"] for e in exps}) < 2:
            continue
        seen: dict[tuple, dict] = {}
        names = set()
        for fraction in sorted({e["fraction"] for e in exps}):
            here = sorted((e for e in exps if e["fraction"] == fraction), key=lambda e: -len(e["rows"]))
            per_fraction = recipe(here[0])[1]
            for exp in (e for e in here if recipe(e)[1] == per_fraction):
                names.add(exp["gan"]["experiment"])
                for r in exp["rows"]:
                    seen.setdefault((r["fraction"], r["classifier"], r["training_set"]), r)
        names = sorted(names)
        out.append((", ".join(f"{k}={json.loads(v)}" for k, v in key) + " (" + ", ".join(names) + ")",
                    sorted(seen.values(), key=lambda r: r["fraction"])))
    return out


def plot(res: dict, out: Path) -> None:
    """ΔAUC against the real fraction with 95% CIs: one row of panels per recipe (the study's, then each scale-up
    recipe run at two or more fractions), one panel per classifier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = recipes(res)
    classifiers = sorted({r["classifier"] for _, rows in series for r in rows})
    fractions = sorted({r["fraction"] for _, rows in series for r in rows})
    fig, axes = plt.subplots(len(series), len(classifiers), figsize=(5 * len(classifiers), 4.2 * len(series)),
                             squeeze=False, sharey=True)
    for (label, all_rows), panels in zip(series, axes):
        for ax, clf in zip(panels, classifiers):
            for offset, ts, colour in ((-0.1, "real_classic", "tab:gray"), (0.0, "real_synthetic", "tab:blue"),
                                       (0.1, "real_synthetic_classic", "tab:green")):
                rows = [r for r in all_rows if r["classifier"] == clf and r["training_set"] == ts
                        and r.get("delta_auc") is not None]
                if not rows:
                    continue
                ys = [r["delta_auc"] for r in rows]
                low = [y - (r["delta_auc_ci"][0] if r["delta_auc_ci"][0] is not None else y)
                       for y, r in zip(ys, rows)]
                high = [(r["delta_auc_ci"][1] if r["delta_auc_ci"][1] is not None else y) - y
                        for y, r in zip(ys, rows)]
                ax.errorbar([fractions.index(r["fraction"]) + offset for r in rows], ys, yerr=[low, high],
                            fmt="o", capsize=4, color=colour, label=ts)
            ax.set_xticks(range(len(fractions)), [f"{f:g}" for f in fractions])
            ax.set_xlim(-0.5, len(fractions) - 0.5)
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set_title(textwrap.fill(f"{clf}: {label}", 75), fontsize=8)
            ax.set_xlabel("real training fraction (data.train_fraction)")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(frameon=False, fontsize=8)
        panels[0].set_ylabel("ΔROC AUC vs real only (95% CI)")
    fig.tight_layout()
    fig.savefig(out, dpi=110, metadata={"Software": None})
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=None, help=f"the study project (default {WORK.relative_to(ROOT)}"
                    "/kermany_study; with --smoke, the smoke study is run first when not given)")
    ap.add_argument("--previous", type=Path, default=None,
                    help="an earlier kermany_study.json whose fractions this project has not run are carried over, "
                         "marked with the experiment and code commit they came from")
    add_folder_args(ap)
    args = ap.parse_args(argv)
    previous = json.loads(args.previous.read_text()) if args.previous else None   # before it is overwritten
    with folders(args):
        if args.project is None:
            if args.smoke:
                import study
                study.main(["--smoke", "--work", str(args.work), "--results", str(args.results)])
            args.project = args.work / "kermany_study"
        exps = experiments(args.project.resolve())
        if not exps:
            raise SystemExit(f"study_table: no experiments in {args.project}: run bench/study.py first")
        for e in exps:
            e["code"] = code_commit(args.project, e["baseline"])
        in_study = [e for e in exps if e["name"] == f"fraction-{e['fraction']:g}"]
        res = {"smoke": args.smoke, "machine": f"{os.cpu_count()}-core CPU", "anchor": ANCHOR, **tabulate(in_study),
               "scale_up": scale_up_results([e for e in exps if e not in in_study], in_study, args.project)}
        if previous:
            res = carry_over(res, previous)
        spread = args.results / "relative_fid_spread.json"   # bench/relative_fid_spread.py, when it has run
        if spread.is_file():
            s = json.loads(spread.read_text())
            res["relative_fid_spread"] = {"paired": s["paired"], "experiments": {
                name: {k: e[k] for k in ("rev", "draws", "n_half", "relative_fid", "fid_synthetic_vs_real_half",
                                         "fid_real_halves")} for name, e in s["experiments"].items()}}
            if s.get("stage_draws"):   # the stage's own draws (not a file of the script's earlier seeds or --draws)
                res["gan"] = [redraw(g, res["relative_fid_spread"]) for g in res["gan"]]
                res["scale_up"] = [{**exp, "gan": redraw(exp["gan"], res["relative_fid_spread"])}
                                   for exp in res["scale_up"]]
        (args.results / "kermany_study.json").write_text(json.dumps(res, indent=1) + "\n")
        (args.results / "kermany_study.md").write_text(markdown(res))
        plot(res, args.results / "kermany_study_delta_auc.png")
        print(markdown(res))
        print(f"-> {args.results}/kermany_study.{{md,json}}, kermany_study_delta_auc.png")
        return res


if __name__ == "__main__":
    main()
