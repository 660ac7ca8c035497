"""The run report's view on its own: the template renders any summary (every section, with a message where a
stage has not run), escapes what it shows, and the matplotlib charts are the same bytes every time, leave
matplotlib's settings as they were, and carry no date, software name or link."""
from __future__ import annotations

import copy
import re

import matplotlib as mpl
import pytest

from pipeline import report_figures, report_page
from pipeline.report_page import fmt
from pipeline.reporting import ReportInputs, mlflow_metrics, summarise

SECTIONS = ("headline", "data", "training", "samples", "fidelity", "downstream", "vtt")


def empty_project_inputs(folder) -> ReportInputs:
    """The report's inputs in a project where no stage has run yet."""
    return ReportInputs(prepared=folder / "data/prepared", gan_reports=folder / "reports/gan",
                        fidelity_metrics=folder / "metrics/fidelity.json", fidelity_reports=folder / "reports/fidelity",
                        downstream_summary=folder / "metrics/downstream.json",
                        downstream_reports=folder / "reports/downstream", vtt_export=folder / "exports/vtt",
                        vtt_export_shown="exports/vtt", vtt_scores=folder / "metrics/vtt.json", data_source="data/raw",
                        gan_params={"steps": 10}, downstream_seeds=[0, 1], examples_per_class=4)


def page_with_vtt_export(folder, per_truth: int) -> tuple[dict, dict]:
    """The summary and figures of an empty project whose VTT export (key version k1) has ``per_truth`` real and
    as many synthetic images of one class."""
    inputs = empty_project_inputs(folder)
    summary = summarise(inputs)
    figures = report_figures.draw(inputs, summary)
    summary["vtt_export"] = {"folder": "exports/vtt", "images": 2 * per_truth, "real_split": "test",
                             "display_size": 64, "dicom": False, "key_version": "k1", "key_sha256": "ab",
                             "per_truth_and_class": {"real": {"a": per_truth}, "synthetic": {"a": per_truth}}}
    return summary, figures


@pytest.fixture
def empty(tmp_path):
    inputs = empty_project_inputs(tmp_path)
    summary = summarise(inputs)
    return summary, report_figures.draw(inputs, summary)


def test_a_project_where_nothing_ran_gets_every_section_with_what_is_missing(empty):
    summary, figures = empty
    page = report_page.render(summary, figures)
    assert re.findall(r'<section id="(\w+)">', page) == list(SECTIONS)
    for missing in ("No file was quarantined.", "No losses.csv.", "No sample grids.", "No fidelity metrics.",
                    "No downstream summary.", "No visual Turing test export.", "Visual Turing test: not scored yet."):
        assert missing in page, missing
    assert "<img" not in page and "steps=10" in page
    assert mlflow_metrics(summary) == {}  # nothing measured, nothing logged (the GAN params are MLflow params)


def test_what_the_page_shows_is_escaped(empty):
    summary, figures = copy.deepcopy(empty[0]), empty[1]
    summary["run"]["data_source"] = "<script>alert(1)</script>"
    page = report_page.render(summary, figures)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script" not in page


def test_downstream_blocks_split_training_sets_from_paired_differences(empty):
    summary, figures = copy.deepcopy(empty[0]), empty[1]
    numbers = {"roc_auc": 0.81234, "accuracy": 0.7, "balanced_accuracy": 0.69, "sensitivity": 0.6,
               "specificity": 0.8, "f1": 0.65, "pr_auc": 0.75, "seeds": 2}
    summary["downstream"] = {"cnn": {"fraction_0.25": {
        "real": numbers, "real_synthetic": {**numbers, "roc_auc": 0.9}, "real_classic": {**numbers, "roc_auc": 0.85},
        "real_synthetic-real": {"roc_auc": 0.08766, "roc_auc_ci_low": 0.01, "roc_auc_ci_high": 0.15,
                                "roc_auc_seeds_ci_low": 0.02, "roc_auc_seeds_ci_high": 0.14,
                                "accuracy": 0.02, "accuracy_ci_low": -0.01, "accuracy_ci_high": 0.05,
                                "verdict": "helped"},
        "real_synthetic-real_classic": {"roc_auc": 0.05, "roc_auc_ci_low": -0.01, "roc_auc_ci_high": 0.11,
                                        "roc_auc_seeds_ci_low": -0.02, "roc_auc_seeds_ci_high": 0.12,
                                        "accuracy": 0.01, "accuracy_ci_low": -0.02, "accuracy_ci_high": 0.04,
                                        "verdict": "no clear difference"}}}}
    page = report_page.render(summary, figures)
    block = page[page.index("<h3>cnn, real-data fraction 0.25</h3>"):page.index('<section id="vtt">')]
    rows = re.findall(r"<tr><td>([^<]+)</td>", block)
    # three training sets, then the differences against real only and against classic augmentation
    assert rows == ["real", "real_synthetic", "real_classic", "real_synthetic-real", "real_synthetic-real_classic"]
    assert '<span class="helped">helped</span>' in block and "0.088 [0.010, 0.150]" in block
    assert "0.088 [0.020, 0.140]" in block   # the interval over seeds
    assert "Means over seeds [0, 1]" in page
    headline = page[page.index('<section id="headline">'):page.index('<section id="data">')]
    assert re.search(r"<td>cnn</td><td class=\"n\">0.25</td>.*0.812.*0.900.*n/a.*0.850.*0.088 \[0.010, 0.150\].*"
                     r"0.050 \[-0.010, 0.110\]", headline, re.S)


def test_the_headline_shows_real_synthetic_classic_where_a_block_ran_it(empty):
    """real+synthetic+classic aug. is not a default arm: without it the headline has the four AUC columns and two
    differences; once one block ran it, every row gets its AUC and its difference against real+classic aug.,
    "n/a" where that block did not run it."""
    summary, figures = copy.deepcopy(empty[0]), empty[1]
    numbers = {"roc_auc": 0.8, "accuracy": 0.7, "balanced_accuracy": 0.69, "sensitivity": 0.6, "specificity": 0.8,
               "f1": 0.65, "pr_auc": 0.75, "seeds": 1}
    difference = {"roc_auc": 0.01, "roc_auc_ci_low": -0.01, "roc_auc_ci_high": 0.03, "roc_auc_seeds_ci_low": None,
                  "roc_auc_seeds_ci_high": None, "accuracy": 0.0, "accuracy_ci_low": 0.0, "accuracy_ci_high": 0.0,
                  "verdict": "no clear difference"}
    part = {"real": numbers, "real_classic": numbers, "real_synthetic": numbers, "real_synthetic-real": difference}
    summary["downstream"] = {"cnn": {"fraction_1.0": part}, "xgboost": {"fraction_1.0": dict(part)}}

    def headline():
        page = report_page.render(summary, figures)
        return page[page.index('<section id="headline">'):page.index('<section id="data">')]

    table = headline()
    assert "real+synthetic+classic" not in table
    # the rows as they were before the optional columns (a run without the set renders the same bytes)
    assert ('<tr><td>cnn</td><td class="n">1.0</td><td class="n">0.800</td><td class="n">0.800</td><td class="n">'
            'n/a</td><td class="n">0.800</td><td class="n">0.010 [-0.010, 0.030]</td>\n<td class="n">n/a</td></tr>\n'
            ) in table
    summary["downstream"]["cnn"]["fraction_1.0"].update(
        real_synthetic_classic={**numbers, "roc_auc": 0.912},
        **{"real_synthetic_classic-real_classic": {**difference, "roc_auc": -0.013}})
    table = headline()
    assert re.findall(r"<th>([^<]+)</th>", table)[-4:] == [
        "AUC real+synthetic+classic aug.", "ΔAUC real+synthetic vs real [95% CI]",
        "ΔAUC real+synthetic vs real+classic aug. [95% CI]",
        "ΔAUC real+synthetic+classic aug. vs real+classic aug. [95% CI]"]
    cnn, xgboost = re.findall(r"<tr><td>(?:cnn|xgboost)</td>.*?</tr>", table, re.S)
    assert re.findall(r'<td class="n">([^<]+)</td>', cnn)[1:] == [
        "0.800", "0.800", "n/a", "0.800", "0.912", "0.010 [-0.010, 0.030]", "n/a", "-0.013 [-0.010, 0.030]"]
    assert re.findall(r'<td class="n">([^<]+)</td>', xgboost)[5:] == ["n/a", "0.010 [-0.010, 0.030]", "n/a", "n/a"]


def test_the_readers_table_has_one_row_per_reader_and_the_pooled_row(empty):
    summary, figures = copy.deepcopy(empty[0]), empty[1]
    summary["vtt_export"] = {"folder": "exports/vtt", "images": 4, "real_split": "test", "display_size": 64,
                             "dicom": False, "key_version": "k1", "key_sha256": "ab",
                             "per_truth_and_class": {"real": {"b": 1, "a": 1}, "synthetic": {"a": 2}}}
    row = {"n": 4, "accuracy": 0.75, "sensitivity_synthetic": 0.5, "specificity": 1.0, "binomial_p_vs_chance": 0.625,
           "accuracy_ci_low": 0.19, "accuracy_ci_high": 0.99}
    summary["vtt"] = {"accuracy": 0.75, "accuracy_ci_low": 0.4, "accuracy_ci_high": 0.9, "binomial_p": 0.6,
                      "readers": 2, "kappa": 0.5, "agreement_method": "Cohen's kappa", "agreement_items": 4,
                      "per_reader": [{"reader": "dr <a>", **row}, {"reader": "dr b", **row}, {"reader": "pooled", **row}]}
    page = report_page.render(summary, figures)
    vtt = page[page.index('<section id="vtt">'):]
    tables = vtt[vtt.index("<th>truth</th>"):]  # after the export's facts
    assert re.findall(r"<tr><td>([^<]+)</td>", tables) == ["real", "synthetic", "dr &lt;a&gt;", "dr b", "pooled"]
    assert "<th>truth</th><th>a</th><th>b</th>" in vtt  # classes of every truth, sorted
    assert "Agreement between readers: Cohen&#39;s kappa 0.500 over 4 images." in vtt
    assert "Not scored yet" not in vtt
    assert re.search(r"pooled reader accuracy 0.750 \[0.400, 0.900\]\s+\(2 reader\(s\)", page)


def test_number_cells():
    assert fmt(None) == "n/a" and fmt(float("nan")) == "n/a" and fmt(0.12345) == "0.123" and fmt(12000.0) == "12,000"
    assert fmt(0.00012) == "1.20e-04" and fmt(0.0) == "0.000" and fmt(7) == "7" and fmt(True) == "True"
    assert report_page.ci(0.5, 0.1, 0.9) == "0.500 [0.100, 0.900]"


def svg_texts(svg: bytes) -> list[str]:
    """The texts of a matplotlib SVG (drawn as glyph paths; matplotlib puts each text in a comment)."""
    return re.findall(r"<!-- (.*?) -->", svg.decode())


def test_a_line_chart_leaves_out_what_it_cannot_draw():
    svg = report_figures.line_chart({"a": ([0, 1, 2], [1.0, float("nan"), 3.0]), "empty": ([], []),
                                     "all nan": ([0, 1], [float("nan")] * 2)}, "title", "step")
    texts = svg_texts(svg)
    assert "title" in texts and "step" in texts and "a" in texts  # the legend names the series drawn
    assert "empty" not in texts and "all nan" not in texts and "no data" not in texts
    assert "no data" in svg_texts(report_figures.line_chart({}, "t", "x"))


def test_charts_are_the_same_bytes_and_leave_matplotlib_settings_alone():
    before = dict(mpl.rcParams)
    series = {"loss D": ([1, 2, 3], [0.5, 0.4, 0.45]), "loss G": ([1, 2, 3], [1.0, 1.2, 0.9])}
    first = report_figures.line_chart(series, "Losses", "step")
    with mpl.rc_context({"svg.hashsalt": "other", "axes.facecolor": "yellow"}):  # what a caller may have set
        again = report_figures.line_chart(series, "Losses", "step")
    assert first == again
    assert dict(mpl.rcParams) == before
    assert first.startswith(b"<svg") and b"<dc:date>" not in first and b"Matplotlib" not in first
    assert not re.search(rb'(href|src)="(?!#)', first)  # nothing outside the figure


def test_the_page_says_when_the_blinded_set_holds_images_it_shows(tmp_path):
    """A tiny synthetic set can force vtt_export to take images of the nearest-pairs figures or the contact sheet:
    the page says so."""
    summary, figures = page_with_vtt_export(tmp_path, 2)
    assert "are shown on this page" not in report_page.render(summary, figures)
    summary["vtt_export"]["synthetic_in_set_shown_in_report"] = 1
    assert "<b>1 synthetic image(s) of the set are shown on this page</b>" in report_page.render(summary, figures)
    assert "on the contact sheet" not in report_page.render(summary, figures)
    summary["vtt_export"]["synthetic_in_set_on_contact_sheet"] = 2
    assert "<b>2 synthetic image(s) of the set are on the contact sheet</b>" in report_page.render(summary, figures)
