"""The report stage: reports/summary.json, a self-contained reports/index.html with every section and the
run's numbers, the headline metrics on the MLflow parent run, byte-identical pages from the same outputs, and
the VTT scores added by vtt_score."""
import csv
import json
import os
import re
import shutil
import subprocess
import sys

from pathlib import Path

import pytest
from browser import CHROMEDRIVER, CHROMIUM, chromium
from conftest import stage_args, tiny_params

from evaluation import vtt
from pipeline.prepared import dataset_hash
from pipeline.report_page import fmt
from pipeline.reporting import mlflow_metrics

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.xdist_group("report-project")  # one pipeline run for the module


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, demo_archive):
    """Every stage in-process on tiny data (one XGBoost arm per training set), then the report."""
    from pipeline import (downstream, downstream_summary, fidelity, prepare, report, synthesize, train_extractor,
                          train_gan, vtt_export)

    project = tiny_params(tmp_path_factory.mktemp("report"), demo_archive,
                          gan=dict(width=0.25, steps=4, batch=8, log_every=2, fid_every=2, fid_samples=16, grid_every=0),
                          extractor=dict(width=4, dim=16, steps=5, batch=16),
                          fidelity=dict(kid_subsets=5, inception_weights="no-such-file.pth", pairs=4),
                          downstream=dict(arms=dict(cnn=dict(real=[], synthetic=[]),
                                                    xgboost=dict(real=["real"], synthetic=["real_synthetic"])),
                                          fractions=[1.0], seeds=[0], xgboost=dict(n_estimators=10),
                                          bootstrap=dict(samples=20)),
                          vtt=dict(n=2, display_size=64))
    a = stage_args(project)
    for stage in (prepare, train_extractor, train_gan, synthesize, fidelity):
        stage.main(a)
    for ts in ("real", "real_synthetic"):
        downstream.main([*a, "--arm", "xgboost", ts, "1.0", "0"])
    downstream_summary.main(a)
    vtt_export.main(a)
    return project, report.main(a)


def parent_runs(project):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("medaug")
    runs = client.search_runs([exp.experiment_id])
    return client, [r for r in runs if "mlflow.parentRunId" not in r.data.tags], runs


def test_summary_has_the_headline_metrics(pipeline_run):
    project, summary = pipeline_run
    assert json.loads((project / "reports/summary.json").read_text()) == summary
    fid = json.loads((project / "metrics/fidelity.json").read_text())["extractors"]["medaug-domain"]["overall"]
    assert summary["fidelity"]["medaug-domain"]["fid"] == fid["fid"]
    assert summary["fidelity"]["medaug-domain"]["relative_fid"] == fid["relative_fid"]
    assert "inception-v3-compat" not in summary["fidelity"]          # unavailable offline: no made-up numbers
    assert set(summary["memorisation"]) == {"features", "pixels"}
    arm = summary["downstream"]["xgboost"]["fraction_1.0"]
    assert {"real", "real_synthetic", "real_synthetic-real"} <= set(arm)
    assert arm["real_synthetic-real"]["roc_auc_ci_low"] <= arm["real_synthetic-real"]["roc_auc"]
    assert summary["data"]["images"] > 0 and summary["data"]["quarantined"] > 0
    prepared = json.loads((project / "data/prepared/summary.json").read_text())
    assert summary["data"]["splits"] == prepared["splits"]
    assert summary["data"]["quarantine_reasons"] == prepared["quarantine_reasons"]
    assert len(summary["data"]["quarantine_listed"]) == prepared["quarantined"]  # under 50: every file by name
    assert summary["fidelity_setup"]["unavailable"].keys() == {"inception-v3-compat"}
    table = json.loads((project / "metrics/downstream.json").read_text())["table"]["xgboost.fraction_1.0"]
    assert arm["real"] == table["real"] and arm["real_synthetic-real"]["verdict"] == "no clear difference"
    assert summary["run"]["data_hash"] == dataset_hash(project / "data/prepared")
    assert summary["vtt_export"]["images"] == 4 and summary["vtt_export"]["folder"] == "exports/vtt"
    assert "vtt" not in summary                                       # not scored yet


def test_page_is_self_contained_and_has_every_section(pipeline_run):
    project, summary = pipeline_run
    page = (project / "reports/index.html").read_text()
    for section in ("headline", "data", "training", "samples", "fidelity", "downstream", "vtt"):
        assert f'<section id="{section}">' in page
    for text in ("Example real images per class", "Quarantine", "Domain FID during training", "medaug-domain",
                 "inception-v3-compat: not computed", "Memorisation audit", "Nearest-neighbour pairs",
                 "ΔROC AUC [95% CI]", "ROC on test", "send this folder", "Not scored yet", dataset_hash(project /
                                                                                                  "data/prepared")):
        assert text in page, text
    assert fmt(summary["fidelity"]["medaug-domain"]["fid"]) in page
    # every image inline, nothing fetched: no http(s) source, link, stylesheet, script or font
    images = re.findall(r'<img src="([^"]*)"', page)
    assert len(images) >= 5 and all(re.match(r"data:image/(png|svg\+xml);base64,", src) for src in images)
    assert len([src for src in images if src.startswith("data:image/svg+xml")]) == 4  # 3 training charts, 1 ROC
    assert not re.search(r'(src|href)="(?!data:|#)', page) and "<script" not in page and "@import" not in page
    assert not re.search(r"url\(", page)


def test_parent_run_carries_headline_metrics_and_identity(pipeline_run):
    project, summary = pipeline_run
    client, parents, runs = parent_runs(project)
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.metrics["fidelity.medaug-domain.fid"] == pytest.approx(summary["fidelity"]["medaug-domain"]["fid"])
    assert mlflow_metrics(summary).keys() <= parent.data.metrics.keys()
    assert not any(name.startswith("run.") for name in parent.data.metrics)  # identity: params and tags
    assert "downstream.xgboost.fraction_1.0.real_synthetic-real.roc_auc" in parent.data.metrics
    assert parent.data.tags["data_hash"] == dataset_hash(project / "data/prepared")
    assert parent.data.params["gan.steps"] == "4"
    assert {"index.html", "summary.json"} <= {f.path for f in client.list_artifacts(parent.info.run_id)}
    child = [r for r in runs if r.data.tags.get("stage") == "report"]
    assert len(child) == 1
    assert {"index.html", "summary.json"} <= {f.path for f in client.list_artifacts(child[0].info.run_id)}


def test_vtt_score_adds_the_scores_to_report_and_parent_run(pipeline_run, tmp_path):
    from pipeline import vtt_score

    project = shutil.copytree(pipeline_run[0], tmp_path / "project")  # the other tests see it unscored
    key = list(csv.DictReader(open(project / "exports/vtt/key.csv", newline="")))
    version = json.loads((project / "exports/vtt/summary.json").read_text())["key_version"]
    path = tmp_path / "reader.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=vtt.RESPONSE_COLUMNS)
        w.writeheader()
        for i, r in enumerate(key):  # right on all but the first image
            answer = r["truth"] if i else ({"real", "synthetic"} - {r["truth"]}).pop()
            w.writerow({"reader": "dr b", "key_version": version, "id": r["id"], "answer": answer, "confidence": 3})
    vtt_score.main([*stage_args(project), str(path)])
    summary = json.loads((project / "reports/summary.json").read_text())
    assert summary["vtt"]["accuracy"] == pytest.approx((len(key) - 1) / len(key)) and summary["vtt"]["readers"] == 1
    page = (project / "reports/index.html").read_text()
    assert "Readers' scores" in page and "dr b" in page and "Not scored yet" not in page
    _, parents, _ = parent_runs(project)
    assert parents[0].data.metrics["vtt.accuracy"] == pytest.approx(summary["vtt"]["accuracy"])


def test_the_same_outputs_give_the_same_page_in_another_process_and_folder(pipeline_run, tmp_path):
    """The page and summary are DVC outs: rendered again in a fresh process, from a copy of the project in
    another folder, under a matplotlibrc that changes every default the charts could pick up, they are the
    same bytes (no date, software name, random SVG id or user setting gets in)."""
    project = pipeline_run[0]
    other = shutil.copytree(project, tmp_path / "some/other/place", ignore=shutil.ignore_patterns("mlflow.db"))
    for f in ("index.html", "summary.json"):
        (other / "reports" / f).unlink()
    (tmp_path / "matplotlibrc").write_text("svg.hashsalt: another\nfont.size: 20\nsvg.fonttype: none\n"
                                           "axes.facecolor: yellow\nxtick.labelsize: 14\nfigure.dpi: 300\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MATPLOTLIBRC": str(tmp_path / "matplotlibrc"),
           "MPLCONFIGDIR": str(tmp_path / "mplconfig")}
    subprocess.run([sys.executable, "-m", "pipeline.report", *stage_args(other, "mlflow.enabled=false")],
                   cwd=tmp_path, env=env, check=True, capture_output=True)
    for f in ("index.html", "summary.json"):
        assert (other / "reports" / f).read_bytes() == (project / "reports" / f).read_bytes(), f


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs chromium and chromedriver: run `make browser`")
def test_page_renders_offline_in_chromium(pipeline_run, tmp_path):
    project, _ = pipeline_run
    d = chromium(tmp_path / "profile", offline=True)
    try:
        d.get((project / "reports/index.html").as_uri())
        facts = d.execute_script("""return {
            sections: [...document.querySelectorAll('section h2')].map(h => h.textContent),
            images: [...document.images].map(i => i.complete && i.naturalWidth > 0),
            charts: [...document.images].filter(i => i.src.startsWith('data:image/svg+xml')).length,
            requests: performance.getEntriesByType('resource').map(r => r.name)}""")
        assert d.execute_script("return fetch('https://example.org').then(() => 'online', () => 'offline')") == "offline"
    finally:
        d.quit()
    assert facts["sections"] == ["Headline metrics", "Dataset", "GAN training", "Samples per class", "Fidelity",
                                 "Downstream classifiers", "Visual Turing test"]
    assert len(facts["images"]) >= 5 and all(facts["images"]) and facts["charts"] >= 4
    assert facts["requests"] == []
