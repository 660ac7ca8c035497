"""Every script in bench/ runs with --smoke (the same code path on tiny generated data, in seconds), so a refactor
that breaks a benchmark fails here. Each runs as a user runs it, ``python bench/<script>.py --smoke``, with its
figures sent to tmp_path, and the figures it wrote are checked, not only its exit status. The scripts are found
by globbing bench/*.py (helpers start with "_"): a new script without --smoke, or without a check below,
fails."""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from browser import CHROMEDRIVER, CHROMIUM

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_"))
NOT_YET: set[str] = set()  # scripts whose --smoke is still to come (none)


def run_smoke(script: str, tmp_path: Path, *extra: str) -> Path:
    """Run ``bench/<script> --smoke`` with its figures in tmp_path/results; returns that folder."""
    results, work = tmp_path / "results", tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
           "DVC_NO_ANALYTICS": "1"}
    env.pop("DVC_ROOT", None)
    env.pop("DVC_EXP_NAME", None)
    proc = subprocess.run([sys.executable, str(BENCH / script), "--smoke", "--results", str(results), "--work",
                           str(work), *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"bench/{script} --smoke failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return results


def read_json(path: Path) -> dict:
    assert path.is_file(), f"{path} not written; the folder has {sorted(p.name for p in path.parent.iterdir())}"
    return json.loads(path.read_text())


def finite(x, lo=-math.inf, hi=math.inf) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and lo <= x <= hi


# ------------------------------------------------------------------ what each smoke must have written

def check_downstream_kermany(out: Path) -> None:
    res = read_json(out / "downstream_kermany_cpu.json")
    assert res["smoke"] is True
    # every classifier x training set ran and is in the summary (the CLI maps them into downstream.arms)
    assert set(res["table"]) == {"cnn.fraction_1.0", "xgboost.fraction_1.0"}
    for row in res["table"].values():
        assert set(row) == {"real", "real_classic", "real_synthetic", "synthetic", "real_synthetic_classic"}
        for m in row.values():
            assert m["seeds"] == 1 and all(finite(m[k], 0, 1) for k in ("roc_auc", "accuracy", "sensitivity"))
    for diffs in res["paired_differences"].values():
        assert set(diffs) == {"real_classic-real", "real_synthetic-real", "synthetic-real",
                              "real_synthetic_classic-real", "real_synthetic-real_classic",
                              "real_synthetic_classic-real_classic"}
    md = (out / "downstream_kermany_cpu.md").read_text()
    assert "## cnn, real-data fraction 1.0" in md and "## xgboost, real-data fraction 1.0" in md


def check_fidelity_kermany(out: Path) -> None:
    res = read_json(out / "fidelity_kermany_cpu.json")
    assert res["smoke"] is True and res["reference_split"] == "val"
    assert res["train_gan"]["steps"] == 2 and finite(res["train_gan"]["images_per_second_stage_wall"], 0)
    assert set(res["timings_seconds"]) == {"extractor", "train_gan", "synthesize", "fidelity"}
    for name in ("best_generator", "degenerate_generator_1_step"):
        g = res[name]
        overall = g["domain"]["overall"]
        assert overall["n_synthetic"] == 12 and overall["n_real"] == 4  # the miniature: 12 train, 4 val images
        assert finite(overall["fid"], 0) and finite(overall["relative_fid"], 0)
        assert set(g["domain"]) == {"overall", "NORMAL", "PNEUMONIA"}
        for m in g["memorisation"].values():
            assert finite(m["fraction_synthetic_below"], 0, 1) and finite(m["fraction_heldout_below"], 0, 1)
        assert g["inception"] == "not requested"
    assert res["figures"] and all((out / f).is_file() for f in res["figures"])
    assert {"kermany_cpu_samples_NORMAL.png", "kermany_cpu_samples_PNEUMONIA.png"} <= set(res["figures"])


def check_fidelity_speed(out: Path) -> None:
    res = read_json(out / "fidelity_speed_cpu.json")
    assert res["smoke"] is True and res["n"] == 64
    assert all(finite(res[k], 0) for k in ("features_seconds", "fid_seconds", "kid_seconds",
                                          "all_metrics_seconds_after_features"))
    # two draws from the same pool through the same extractor: near zero, never clearly negative
    assert finite(res["fid"], -1e-6, 1.0) and finite(res["kid"], -1e-3, 1.0)


def check_gan_defaults(out: Path) -> None:
    res = read_json(out / "gan_defaults_32.json")
    assert res["smoke"] is True and res["steps"] == 2 and res["train_images"] == 12 and res["val_images"] == 4
    assert finite(res["fid_real_train_vs_val"], 0)
    assert len(res["configs"]) == 10 and {"dcgan (paper)", "+diffaugment +ema +r1 0.01"} <= set(res["configs"])
    for c in res["configs"].values():
        (run,) = c["runs"]
        assert set(run["fid_by_step"]) == {"1", "2"} and all(finite(v, 0) for v in run["fid_by_step"].values())
        assert run["fid_real_train_vs_val"] == res["fid_real_train_vs_val"]   # one invocation, one extractor
        assert c["fid_final_mean"] == run["fid_by_step"]["2"] and c["seeds"] == 1
        assert all(finite(v) for v in run["final_losses"].values())


def check_prepare_shared_data(out: Path) -> None:
    res = read_json(out / "prepare_shared_data.json")
    assert res["smoke"] is True and res["all_pass"] is True and all(res["checks"].values()) and len(res["checks"]) == 6
    k = res["results"]["kermany"]
    assert k["prepared"] == 20 and k["class_counts"] == {"NORMAL": 10, "PNEUMONIA": 10} and k["patients"] == 10
    assert res["results"]["rg1"]["transfer_syntaxes"][1].startswith("JPEG 2000")
    assert res["results"]["pneumoniamnist"]["prepared"] == res["expected"]["pneumoniamnist_images"] == 30


def check_prepare_throughput(out: Path) -> None:
    res = read_json(out / "prepare_throughput.json")
    assert res["smoke"] is True and res["images"] == 2 and res["workers"] == 1
    assert set(res["images_per_second"]) == {"uncompressed", "jpeg2000"}
    for r in res["images_per_second"].values():
        assert all(finite(r[k], 0) and r[k] > 0 for k in ("ours", "monai_baseline", "floor_pydicom_pixel_array"))
        assert finite(r["ours_vs_baseline"], 0) and finite(r["ours_vs_floor"], 0)


def check_screenshots(out: Path) -> None:
    res = read_json(out / "screenshots.json")
    assert res["smoke"] is True
    facts = res["mlflow_compare"]
    assert list(facts["runs"]) == ["smoke-a", "smoke-b"] and len(set(facts["runs"].values())) == 2
    assert facts["params_that_differ"] == {"report.examples_per_class": ["2", "3"]}
    assert all(n > 0 for n in facts["metrics_on_each"])  # the report stage's headline metrics on each parent
    assert facts["tags"]["dvc_exp_name"] == ["smoke-a", "smoke-b"]
    assert facts["tags"]["data_hash"][0] and len(set(facts["tags"]["data_hash"])) == 1  # same prepared data
    assert res["report_page_offline"] == res["mlflow_screenshots"] == "skipped: --no-browser"
    assert not list(out.glob("*.png"))


def check_published_layouts(out: Path) -> None:
    res = read_json(out / "published_layouts.json")
    k = res["kermany"]
    assert res["smoke"] is True and k["classes"] == ["NORMAL", "PNEUMONIA"]
    assert k["test_is_exactly_the_published_test_folder"] is True and k["splits"]["val"]["images"] > 0
    assert finite(k["inspect_seconds"], 0, 60) and res["nih"]["quarantined"] == 0
    assert res["png16_12bit"]["median_span"] > 1.5 and res["png16_12bit"]["low_contrast_share"] == 0
    assert res["miswindowed"]["low_contrast_share"] == 1.0 and res["miswindowed"]["warnings"]


def check_kermany_official_test(out: Path) -> None:
    res = read_json(out / "kermany_official_test_cpu.json")
    assert res["smoke"] is True and res["stages_run"] == ["prepare", "downstream_cnn_real@cnn-real-1.0-0"]
    assert res["split"]["split_from"].startswith("published") or "published" in res["split"]["split_from"]
    arm = res["arm"]
    assert arm["trainset"] == "real" and arm["n_test"] == res["split"]["splits"]["test"]["images"]
    assert finite(arm["metrics"]["accuracy"], 0, 1) and res["anchor"]["roc_auc"] == 0.943


def check_cnn_throughput(out: Path) -> None:
    res = read_json(out / "cnn_throughput_cpu.json")
    assert res["smoke"] is True and len(res["rows"]) == 5 and res["rows"][0]["case"].startswith("gan")
    for row in res["rows"]:
        assert finite(row["gflop_per_second"], 0) and row["mflop_per_image"] > 0, row
    assert res["rows"][1]["mflop_per_image"] == res["rows"][3]["mflop_per_image"]   # same network, other layout


def check_study(out: Path) -> None:
    """study.py ran its one smoke experiment through `dvc exp run --queue` / `--run-all`; study_table.py then
    reads it back through `dvc exp show` and dvc.api (its own smoke, run here on that project)."""
    runs = read_json(out / "kermany_study_runs.json")
    names = ["fraction-1", "fraction-1-scaled"]   # the study's one smoke fraction, then its scale-up experiment
    assert runs["smoke"] is True and sorted(runs["experiments"]) == names and runs["queued_now"] == names
    # fraction-1-scaled changes only the CNN: its GAN is fraction-1's, restored from DVC's run cache, not retrained
    log = (Path(runs["project"]).parent / "kermany_study.log").read_text()
    assert log.count("Running stage 'train_gan'") == 1 and "Stage 'train_gan' is cached" in log
    # the GAN's checkpoint lives outside the queue's temp folder, one folder per experiment, so a rerun resumes it
    assert [p.parent.name for p in (Path(runs["project"]) / "checkpoints").glob("*/checkpoint.pt")] == ["fraction-1"]
    table = run_smoke("study_table.py", out.parent / "table", "--project", runs["project"])
    res = read_json(table / "kermany_study.json")
    assert res["smoke"] is True and [g["experiment"] for g in res["gan"]] == ["fraction-1"]
    rows = {(r["classifier"], r["training_set"]): r for r in res["rows"]}
    assert set(rows) == {("cnn", "real"), ("cnn", "real_synthetic")}
    assert finite(rows["cnn", "real"]["roc_auc"], 0, 1) and "delta_auc" not in rows["cnn", "real"]
    delta = rows["cnn", "real_synthetic"]
    assert delta["delta_auc"] == pytest.approx(delta["roc_auc"] - rows["cnn", "real"]["roc_auc"], abs=1e-9)
    assert delta["delta_auc_ci"][0] <= delta["delta_auc"] <= delta["delta_auc_ci"][1]
    assert finite(res["gan"][0]["relative_fid"], 0) and res["gan"][0]["train_images"] > 0
    assert (table / "kermany_study_delta_auc.png").stat().st_size > 0
    md = (table / "kermany_study.md").read_text()
    assert "## What the numbers cover" in md
    # the scale-up experiment stands beside fraction-1, not in its rows
    [scaled] = res["scale_up"]
    assert scaled["gan"]["experiment"] == "fraction-1-scaled" and scaled["settings"] == {"downstream.cnn.epochs": 2}
    assert {(r["classifier"], r["training_set"]) for r in scaled["rows"]} == set(rows)
    assert {k: v for k, v in scaled["gan"].items() if k not in ("experiment", "rev")} == {
        k: v for k, v in res["gan"][0].items() if k not in ("experiment", "rev")}   # the same GAN, from the run cache
    scaled_real = next(r for r in scaled["rows"] if r["training_set"] == "real")
    assert f"| cnn | real | {rows['cnn', 'real']['roc_auc']:.3f} → {scaled_real['roc_auc']:.3f} |" in md
    assert (f"With the CNN settings of fraction-1-scaled (in their sections), real: ROC AUC "
            f"{scaled_real['roc_auc']:.3f}") in md
    # a fraction run by an earlier study project is carried over from its JSON, marked as such
    previous = out.parent / "previous.json"
    previous.write_text(json.dumps({**res, "rows": [{**r, "fraction": 0.1} for r in res["rows"]],
                                    "gan": [{**g, "fraction": 0.1, "experiment": "fraction-0.1"} for g in res["gan"]]}))
    merged = read_json(run_smoke("study_table.py", out.parent / "merged", "--project", runs["project"],
                                 "--previous", str(previous)) / "kermany_study.json")
    assert [(g["experiment"], g.get("carried_over", False)) for g in merged["gan"]] == [("fraction-0.1", True),
                                                                                         ("fraction-1", False)]
    assert [r["fraction"] for r in merged["rows"]] == [0.1] * len(res["rows"]) + [1.0] * len(res["rows"])
    # relative FID redrawn: both experiments have one GAN (the run cache's), so draw by draw the same figures
    spread = read_json(run_smoke("relative_fid_spread.py", out.parent / "spread", "--project", runs["project"])
                       / "relative_fid_spread.json")
    assert spread["smoke"] is True and list(spread["experiments"]) == names
    first = spread["experiments"]["fraction-1"]
    assert len(first["relative_fid_each"]) == first["draws"] == res["gan"][0]["relative_fid_draws"] == 5
    assert all(finite(v, 0) for v in first["relative_fid_each"]) and spread["stage_draws"]
    # the stage's own draws: the script gives the figure the fidelity stage wrote (rounded to 4 places)
    stage = res["gan"][0]
    assert first["relative_fid"]["median"] == pytest.approx(stage["relative_fid"], abs=1e-4)
    assert [first["relative_fid"]["p2.5"], first["relative_fid"]["p97.5"]] == pytest.approx(
        stage["relative_fid_range"], abs=1e-4)
    assert spread["paired"] == [{"a": "fraction-1", "b": "fraction-1-scaled", "share_a_lower": 0.0,
                                 "ratio_a_over_b": {"median": 1.0, "p2.5": 1.0, "p97.5": 1.0}}]


def check_gan_throughput(out: Path) -> None:
    res = read_json(next(out.glob("gan_throughput_*.json")))
    assert res["smoke"] is True and res["images"] > 0 and [r["batch"] for r in res["rows"]] == [4]
    row = res["rows"][0]
    assert finite(row["reference_images_per_second"], 0)
    for key in ("ours_unconditional", "ours_conditional"):
        assert finite(row[key]["images_per_second"], 0), row[key]


def check_gpu_check(out: Path) -> None:
    res = read_json(next(out.glob("gpu_check_smoke_*.json")))
    assert res["smoke"] is True and list(res["checks"]) == ["graphs", "deterministic", "throughput", "evaluation"]
    graphs = "PASS" if res["cuda"] and "cuda" in res["runtime"]["device"] else "SKIP"  # no CUDA: graphs not run
    assert [c["verdict"] for c in res["checks"].values()] == [graphs, graphs, "PASS", "PASS"], res["checks"]
    det = res["checks"]["deterministic"]
    assert det["eager_vs_eager"] == 0 and det["resumed_identical"] and det["travelled"] > 0
    assert res["checks"]["throughput"]["rows"][0]["ours_images_per_second"] > 0
    assert res["checks"]["evaluation"]["finite"]


CHECKS = {"gan_throughput.py": check_gan_throughput, "cnn_throughput.py": check_cnn_throughput, "gpu_check.py": check_gpu_check, "published_layouts.py": check_published_layouts, "kermany_official_test.py": check_kermany_official_test,
          "downstream_kermany.py": check_downstream_kermany, "fidelity_kermany.py": check_fidelity_kermany,
          "fidelity_speed.py": check_fidelity_speed, "gan_defaults.py": check_gan_defaults,
          "prepare_shared_data.py": check_prepare_shared_data, "prepare_throughput.py": check_prepare_throughput,
          "screenshots.py": check_screenshots, "study.py": check_study}
# scripts whose smoke runs inside another script's check (they read the smoke study project of study.py)
RUN_BY = {"study_table.py": "study.py", "relative_fid_spread.py": "study.py"}
# the parts that need a browser run in the slow tier (test_screenshots_smoke_with_browser)
EXTRA_ARGS = {"screenshots.py": ("--no-browser",)}


def results_snapshot() -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in (BENCH / "results").iterdir()}


@pytest.mark.parametrize("script", SCRIPTS)
def test_bench_script_smoke(script, tmp_path):
    if script in NOT_YET:
        pytest.skip(f"bench/{script}: its --smoke comes with another change (tests/test_bench_smoke.py NOT_YET)")
    if script in RUN_BY:
        assert RUN_BY[script] in CHECKS
        pytest.skip(f"bench/{script} --smoke runs in the check of bench/{RUN_BY[script]}")
    assert script in CHECKS, (f"bench/{script} has no smoke check: give it --smoke (bench/_data.py add_folder_args "
                              "and folders) and add what its smoke must write to CHECKS in tests/test_bench_smoke.py")
    before = results_snapshot()
    out = run_smoke(script, tmp_path, *EXTRA_ARGS.get(script, ()))
    CHECKS[script](out)
    assert results_snapshot() == before, "a smoke run wrote into bench/results/"


def test_smoke_refuses_to_write_into_bench_results():
    spec = importlib.util.spec_from_file_location("bench_data", BENCH / "_data.py")
    data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(data)

    ap = argparse.ArgumentParser()
    data.add_folder_args(ap)
    with pytest.raises(SystemExit, match="not results"):
        with data.folders(ap.parse_args(["--smoke", "--results", str(BENCH / "results")])):
            pass
    args = ap.parse_args(["--smoke"])
    with data.folders(args):  # a smoke run without folders gets temporary ones, removed afterwards
        tmp = args.results.parent
        assert args.work.parent == tmp and args.results.is_dir() and BENCH not in args.results.parents
    assert not tmp.exists()


def test_downstream_cli_maps_into_the_arms_params(monkeypatch):
    """--classifiers x --trainsets become downstream.arms lists, each training set in the group of what it reads."""
    from pipeline.arms import planned
    from pipeline.params import load_params

    overrides = load_script("downstream_kermany", monkeypatch).arms_overrides(["xgboost"], ["synthetic", "real"])
    p = load_params(ROOT / "params.yaml", overrides)
    assert p["downstream"]["arms"] == {"cnn": {"real": [], "synthetic": []},
                                       "xgboost": {"real": ["real"], "synthetic": ["synthetic"]}}
    assert planned(p["downstream"]["arms"]) == {"xgboost": ["real", "synthetic"]}


def test_study_only_runs_the_experiments_it_names(monkeypatch):
    """--only picks experiments of bench/kermany_study.yaml by name, fractions and scale-ups alike, each with its
    own overrides; a name the file does not have stops the study before anything is queued."""
    study = load_script("study", monkeypatch)
    settings = {"scale_up": {"wide": {"data.train_fraction": 1.0, "gan.width": 1.0, "arms": ["real", "real_classic"]}}}
    per_fraction = {0.1: {"downstream.cnn.epochs": 60}, 1.0: {}}

    def plan(*only):
        return study.planned(settings, per_fraction, argparse.Namespace(smoke=False, only=list(only) or None))

    assert list(plan()) == ["fraction-0.1", "fraction-1", "wide"]
    assert plan("wide", "fraction-0.1") == {"fraction-0.1": ["data.train_fraction=0.1", "downstream.cnn.epochs=60"],
                                            "wide": ["data.train_fraction=1.0", "gan.width=1.0",
                                                     "arms=[real,real_classic]"]}
    with pytest.raises(SystemExit, match=r"\['fraction-0.5'\]: not in"):
        plan("fraction-0.5")
    # a comma in a value is a sweep to DVC (one experiment per item) unless quoted
    assert study.override("gan.diffaugment", "color,cutout") == "gan.diffaugment='color,cutout'"
    assert study.override("gan.diffaugment", "cutout") == "gan.diffaugment=cutout"


def test_study_table_names_a_shared_real_arm_once(monkeypatch):
    """Two scale-up experiments with the same CNN settings share their real-only arms (DVC's run cache): the
    anchor line gives each arm's figures once, naming both; a different figure gets its own entry. One that
    changes only the GAN has the study's own real-only arms, and is left out; arms with synthetic images are
    not real-only."""
    table = load_script("study_table", monkeypatch)

    def exp(name, auc, fraction=1.0, settings=None):
        return {"fraction": fraction, "gan": {"experiment": name},
                "settings": {"downstream.cnn.width": 32} if settings is None else settings,
                "rows": [{"classifier": "cnn", "training_set": ts, "roc_auc": auc + 0.01 * i, "accuracy": 0.8}
                         for i, ts in enumerate(("real", "real_classic", "real_synthetic"))]}

    res = {"scale_up": [exp("scaled", 0.928), exp("wide-gan", 0.928), exp("other", 0.95), exp("low", 0.9, 0.1),
                        exp("gan-only", 0.924, settings={"gan.loss": "hinge"})]}
    assert table.real_only_cnn(res) == {("real", "0.928", "0.800"): ["scaled", "wide-gan"],
                                        ("real_classic", "0.938", "0.800"): ["scaled", "wide-gan"],
                                        ("real", "0.950", "0.800"): ["other"],
                                        ("real_classic", "0.960", "0.800"): ["other"]}


def test_study_table_plots_each_recipe_run_at_two_fractions(monkeypatch):
    """Scale-up experiments that differ only in the fraction, in what scales with it (FID cadence, CNN epochs) and
    in their arms share a recipe, read against each one's own baseline commit (``recipe_settings``; ``settings``
    for entries of an older JSON), and the plot gives it a row beside the study's; a recipe run at one fraction
    only is left out. Experiments of one recipe at one fraction give each arm once, the larger one's, and one
    with other per-fraction settings (another FID cadence: another generator) is not mixed in."""
    table = load_script("study_table", monkeypatch)

    def exp(name, fraction, settings, sets, auc=0.9, **extra):
        return {"fraction": fraction, "gan": {"experiment": name}, "settings": settings, **extra,
                "rows": [{"fraction": fraction, "classifier": "cnn", "training_set": ts, "roc_auc": auc,
                          "delta_auc": auc - 0.9, "delta_auc_ci": [auc - 0.91, auc - 0.89]} for ts in sets]}

    decay = {"gan.steps": 12000, "gan.lr_decay": 0.5}
    low = {**decay, "data.train_fraction": 0.1, "gan.fid_every": 400, "downstream.cnn.epochs": 60}
    study_rows = exp("fraction-1", 1.0, {}, ("real", "real_synthetic"))["rows"]
    res = {"rows": study_rows, "scale_up": [
        exp("low", 0.1, {**low, "downstream.arms.cnn.synthetic": ["real_synthetic"]}, ("real", "real_synthetic"),
            0.92),
        exp("low-classic", 0.1, low, ("real", "real_synthetic", "real_classic"), 0.93),
        exp("low-other-cadence", 0.1, {**low, "gan.fid_every": 100}, ("real", "real_synthetic_classic"), 0.8),
        # its settings against a study experiment of an older baseline show a key its own baseline has
        exp("full", 1.0, {**decay, "gan.fid_every": 20, "fidelity.relative_fid_draws": 100},
            ("real", "real_synthetic"), recipe_settings={**decay, "gan.fid_every": 20}),
        exp("wide", 1.0, {"gan.width": 1.0}, ("real", "real_synthetic")),              # one fraction: no row
        exp("decay-wide", 0.1, {**decay, "gan.width": 1.0}, ("real", "real_synthetic"))]}   # another recipe
    series = table.recipes(res)
    assert [label for label, _ in series] == [
        "study (bench/kermany_study.yaml: common, per_fraction)",
        "gan.lr_decay=0.5, gan.steps=12000 (full, low, low-classic)"]
    assert series[0][1] is study_rows
    rows = series[1][1]
    assert [(r["fraction"], r["training_set"], r["roc_auc"]) for r in rows] == [
        (0.1, "real", 0.93), (0.1, "real_synthetic", 0.93), (0.1, "real_classic", 0.93),
        (1.0, "real", 0.9), (1.0, "real_synthetic", 0.9)]


def test_study_table_per_fraction_settings_are_the_yamls(monkeypatch):
    """What scales with the fraction, for the plot's recipes, is bench/kermany_study.yaml's per_fraction keys
    and the fraction itself: a key added there must not split every recipe."""
    table = load_script("study_table", monkeypatch)
    study = yaml.safe_load((ROOT / "bench/kermany_study.yaml").read_text())
    keys = {k for overrides in study["per_fraction"].values() for k in overrides}
    assert set(table.PER_FRACTION) == keys | {"data.train_fraction"}


def test_study_table_says_when_seeds_gave_one_model(monkeypatch):
    """XGBoost without augmentation gives one model whatever the seed: where the experiment's summary marks it,
    its ΔAUC shows no interval over seeds and its verdict rests on the bootstrap over test patients alone. A
    summary written before the mark gets it from its zero-width interval; an interval of width prints as it is."""
    table = load_script("study_table", monkeypatch)
    point = {"mean": 0.02, "ci": [0.02, 0.02], "n": 3}
    numbers = {"roc_auc": 0.9, "accuracy": 0.8, "sensitivity": 0.95, "specificity": 0.6, "seeds": 3}
    downstream = {"table": {"xgboost.fraction_1.0": {ts: numbers for ts in ("real", "real_classic", "real_synthetic",
                                                                            "synthetic")}},
                  "paired_differences": {"xgboost.fraction_1.0": {
                      "real_synthetic-real": {"roc_auc": {"mean": 0.02, "ci": [0.01, 0.03], "seeds": 3,
                                                          "seed_spread": {**point, "identical_models": True}}},
                      "synthetic-real": {"roc_auc": {"mean": 0.02, "ci": [0.01, 0.03], "seeds": 3,
                                                     "seed_spread": point}},
                      "real_classic-real": {"roc_auc": {"mean": 0.02, "ci": [0.01, 0.03], "seeds": 3,
                                                        "seed_spread": {**point, "ci": [0.01, 0.03]}}},
                      "real_synthetic-real_classic": {"roc_auc": {"mean": -0.004, "ci": [-0.01, 0.002], "seeds": 3,
                                                                  "seed_spread": {**point, "ci": [-0.03, 0.02]}}}}}}
    split = {"images": 10, "patients": 5, "PNEUMONIA": 6}
    experiment = {"fraction": 1.0, "name": "fraction-1", "rev": "0123456789", "code": "abcdef0123",
                  "downstream": downstream, "prepared": {"classes": ["NORMAL", "PNEUMONIA"],
                                                         "splits": {s: split for s in ("train", "val", "test")}},
                  "fidelity": {"extractors": {"medaug-domain": {"overall": {"fid": 9.0, "relative_fid": 3.0,
                                                                            "precision": 0.5, "recall": 0.4}}},
                               "memorisation": {"features": {"fraction_synthetic_below": 0.01,
                                                             "fraction_heldout_below": 0.01, "percentile": 1}}}}
    md = table.markdown(table.tabulate([experiment]))
    assert ("| 1 | real_synthetic | 0.900 | 0.800 | 0.950 | 0.600 | 0.020 [0.010, 0.030] (seeds: one model) | "
            "helped (one model: seeds identical) |") in md
    assert ("| 1 | synthetic | 0.900 | 0.800 | 0.950 | 0.600 | 0.020 [0.010, 0.030] (seeds: one model) | "
            "helped (one model: seeds identical) |") in md
    assert ("| 1 | real_classic | 0.900 | 0.800 | 0.950 | 0.600 | 0.020 [0.010, 0.030] (seeds [0.010, 0.030]) | "
            "helped |") in md
    # the paired difference against classic augmentation: a section of its own, not a row against real
    assert ("| fraction-1 | 1 | xgboost | real_synthetic-real_classic | -0.004 [-0.010, 0.002] (seeds [-0.030, "
            "0.020]) | no clear difference |") in md
    assert md.count("real_synthetic-real_classic") == 1
    honesty = " ".join(md[md.index("## What the numbers cover"):].split())
    assert ('without augmentation it is deterministic: its 3 seeds give one model, marked "(seeds: one model)"'
            in honesty and "its only interval is the bootstrap over test patients" in honesty)


def test_study_table_carries_over_the_scale_up_experiments_of_an_earlier_project(monkeypatch):
    """A new study project that ran one scale-up experiment only: the fractions, the known shift and the earlier
    scale-up sections come from the earlier JSON, marked as carried over (verdicts called again); the new one is
    compared with the carried study rows of its fraction, its settings taken against the project's baseline."""
    table = load_script("study_table", monkeypatch)
    row = {"fraction": 1.0, "classifier": "xgboost", "training_set": "real_synthetic", "seeds": 3, "roc_auc": 0.9,
           "accuracy": 0.8, "sensitivity": 0.9, "specificity": 0.6, "delta_auc": 0.02, "delta_auc_ci": [0.01, 0.03],
           "delta_auc_seed_spread": {"mean": 0.02, "ci": [-0.01, 0.05], "n": 3}, "verdict": "helped"}
    gan = {"fraction": 1.0, "experiment": "fraction-1", "rev": "aaaaaaa", "code": "bbbbbbb", "train_images": 10,
           "train_patients": 5, "domain_fid": 0.4, "relative_fid": 8.0, "precision": 0.9, "recall": 0.4,
           "memorisation_synthetic_below": 0.01, "memorisation_heldout_below": 0.01, "memorisation_percentile": 1}
    shift = {"positive": "PNEUMONIA", "train_share": 0.74, "test_share": 0.62, "shared_ids": 1}
    over_classic = {"experiment": "fraction-1", "fraction": 1.0, "classifier": "xgboost", "seeds": 3,
                    "comparison": "real_synthetic-real_classic", **{k: row[k] for k in row if k.startswith("delta")},
                    "verdict": "helped"}
    previous = {"rows": [row], "gan": [gan], "shift": shift, "vs_classic": [over_classic],
                "scale_up": [{"fraction": 1.0, "settings": {"gan.width": 1.0}, "rows": [row],
                              "gan": {**gan, "experiment": "fraction-1-wide-gan"}}]}
    new = {"fraction": 1.0, "settings": {"gan.diffaugment": "color"}, "settings_against": "baseline",
           "rows": [{**row, "roc_auc": 0.91}],
           "gan": {**gan, "experiment": "fraction-1-gan-color", "relative_fid": 6.0, "fid_real_halves": 0.04}}
    res = table.carry_over({"rows": [], "gan": [], "shift": {}, "scale_up": [new]}, previous)
    assert res["shift"] == shift and res["gan"][0]["carried_over"]
    assert res["rows"][0]["verdict"] == "no clear difference"   # called again: the seed interval includes 0
    assert res["vs_classic"][0]["verdict"] == "no clear difference"
    assert [e["gan"]["experiment"] for e in res["scale_up"]] == ["fraction-1-gan-color", "fraction-1-wide-gan"]
    assert res["scale_up"][1]["gan"]["carried_over"] and not res["scale_up"][0]["gan"].get("carried_over")
    md = table.markdown(res)
    assert "## Beside the study at fraction 1: fraction-1-wide-gan (rev aaaaaaa, code bbbbbbb, carried over" in md
    assert ("Settings on top of the study project's baseline (this project has no fraction-1 experiment): "
            "gan.diffaugment=color. The study column is fraction-1.") in md
    assert "| xgboost | real_synthetic | 0.900 → 0.910 |" in md
    assert "| fraction-1 | 1 | xgboost | real_synthetic-real_classic | 0.020 [0.010, 0.030] (seeds [-0.010, 0.050]) |" in md
    assert "| fraction-1-gan-color | 0.40 | 6.00, one draw (0.240 / 0.040) |" in md
    assert "| fraction-1 | 0.40 | 8.00, one draw |" in md   # recorded before the real halves' FID was
    assert "The study's fraction-1 ran code bbbbbbb, this experiment code" not in md          # the same code
    res["scale_up"][0]["gan"]["code"] = "ccccccc"
    assert ("The study's fraction-1 ran code bbbbbbb, this experiment code ccccccc: a figure whose definition "
            "changed in between") in table.markdown(res)


def test_study_table_shows_relative_fid_redrawn_for_one_draw_runs(monkeypatch):
    """A run whose fidelity stage took one draw gets relative_fid_spread's figures at its rev (marked †, its one
    draw kept); a run at another rev, one carried over from an earlier project and one whose stage drew already
    keep their own."""
    table = load_script("study_table", monkeypatch)
    q = lambda m, lo, hi: {"median": m, "p2.5": lo, "p97.5": hi}  # noqa: E731
    spread = {"paired": [], "experiments": {name: {
        "rev": "aaaaaaa", "draws": 100, "n_half": 460, "relative_fid": q(3.0, 0.6, 9.2),
        "fid_synthetic_vs_real_half": q(0.15, 0.1, 0.2), "fid_real_halves": q(0.05, 0.02, 0.17)}
        for name in ("fraction-1", "fraction-1-old", "fraction-1-carried", "fraction-1-drawn")}}
    gan = {"fraction": 1.0, "rev": "aaaaaaa", "relative_fid": 2.12, "relative_fid_draws": 1,
           "fid_synthetic_vs_real_half": 0.084, "fid_real_halves": 0.04}
    redrawn = table.redraw({**gan, "experiment": "fraction-1"}, spread)
    assert redrawn["relative_fid"] == 3.0 and redrawn["relative_fid_one_draw"] == 2.12
    assert table.relative_cell(redrawn) == "3.00 [0.60, 9.20] (0.150 / 0.050) †"
    assert table.relative_cell(table.redraw({**gan, "experiment": "fraction-1-old", "rev": "bbbbbbb"}, spread)) == (
        "2.12, one draw (0.084 / 0.040)")
    carried = {**gan, "experiment": "fraction-1-carried", "carried_over": True}
    assert table.redraw(carried, spread) == carried
    drawn = {**gan, "experiment": "fraction-1-drawn", "relative_fid_draws": 100, "relative_fid_range": [1.0, 5.0]}
    assert table.redraw(drawn, spread) == drawn and table.relative_cell(drawn) == "2.12 [1.00, 5.00] (0.084 / 0.040)"


def load_script(name: str, monkeypatch):
    """bench/<name>.py as a module (its sys.path changes end with the test)."""
    monkeypatch.setattr(sys, "path", [str(BENCH), *sys.path])
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gan_defaults_merges_runs_of_the_same_settings_only(monkeypatch, tmp_path):
    gd = load_script("gan_defaults", monkeypatch)
    run = lambda seed, curve: {"seed": seed, "fid_by_step": curve}  # noqa: E731
    old = {"+ema": {"runs": [run(0, {"100": 5.0, "200": 4.0}), run(1, {"100": 6.0, "200": 2.0})]},
           "dcgan (paper)": {"runs": [run(0, {"100": 9.0, "200": 8.0})]}}
    new = {"+ema": {"runs": [run(1, {100: 3.0, 200: 1.0})]}, "+diffaugment": {"runs": [run(0, {100: 7.0, 200: 6.0})]}}
    merged = gd.summarise(gd.merge(old, new))
    # seed 1 of +ema replaced, seed 0 kept; other configurations kept; a new one added
    assert [r["seed"] for r in merged["+ema"]["runs"]] == [0, 1] and merged["+ema"]["runs"][1]["fid_by_step"][200] == 1.0
    assert merged["+ema"]["fid_final_mean"] == 2.5 and merged["+ema"]["fid_final_std"] == 1.5
    assert merged["+ema"]["seeds"] == 2 and merged["dcgan (paper)"]["fid_final_mean"] == 8.0
    assert merged["+diffaugment"]["fid_final_mean"] == 6.0
    assert len(old["+ema"]["runs"]) == 2  # the old results are not modified in place
    # old runs keep the floor of the extractor that scored them; their own when they have one
    old["+ema"]["runs"][0]["fid_real_train_vs_val"] = 0.3
    new["+ema"]["runs"][0]["fid_real_train_vs_val"] = 0.6
    merged = gd.merge(old, new, old_floor=0.5)
    assert [r["fid_real_train_vs_val"] for r in merged["+ema"]["runs"]] == [0.3, 0.6]
    assert merged["dcgan (paper)"]["runs"][0]["fid_real_train_vs_val"] == 0.5
    settings = {"resolution": 32, "width": 0.5, "steps": 3000, "batch": 64, "train_images": 10, "val_images": 2}
    gd.check_same_settings(settings, dict(settings), tmp_path / "x.json")
    with pytest.raises(SystemExit, match="steps: 3000 there, 60 here"):
        gd.check_same_settings(settings, {**settings, "steps": 60}, tmp_path / "x.json")


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs chromium and chromedriver: run `make browser`")
def test_screenshots_smoke_with_browser(tmp_path):
    out = run_smoke("screenshots.py", tmp_path)
    res = read_json(out / "screenshots.json")
    page = res["report_page_offline"]
    assert page["broken_images"] == 0 and page["network_requests"] == [] and page["images"] > 0
    assert "Dataset" in page["sections"]
    for name in ("report_page.png", "mlflow_compare.png", "mlflow_runs.png"):
        assert (out / name).stat().st_size > 1000
    assert "mlflow_screenshots" not in res and res["mlflow_ui_showed_the_runs"] == {"compare": True, "runs": True}
