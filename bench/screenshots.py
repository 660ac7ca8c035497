"""Screenshots in headless Chromium of a project that has run: the run report opened from the file system with
every network request failing, and the MLflow UI's comparison of two pipeline (parent) runs.

    python bench/screenshots.py [--project .] [--runs EXP_NAME EXP_NAME] [--smoke]
    python bench/screenshots.py [--project DIR | --tiny] --before-after REV

--before-after REV: the report page of the project rendered twice from the same stage outputs, by the code of
git revision REV and by this checkout's (the report stage run in a fresh process each, its page written under
--work), then compared: the sections and the visible text of each (every number, word and table cell; text
inside the old hand-made SVG charts left out: charts are pictures in both), and with Chromium both pages side
by side in report_page_before_after.png (before left). Writes report_before_after.json; nothing else runs.
--tiny: the project is made first, in --work: every stage in-process on a generated demo archive at 32 px with
a few GAN steps and one XGBoost arm per training set (as tests/test_report.py runs it; about a minute).

--runs names two DVC experiments (the parent runs' dvc_exp_name tags); default: the two latest parent runs.
The report page is saved at 3/4 scale with a 256-colour palette (a tall page; it keeps the repository small).
Needs Debian's chromium and chromium-driver (`make browser`). Writes bench/results/report_page.png,
mlflow_compare.png, mlflow_runs.png and screenshots.json (what the report page loaded; the two runs' ids,
metric counts, differing params and identity tags), and prints the same (--results elsewhere).

--smoke: a tiny project made on the spot (a generated miniature of the Kermany folder, its prepare stage, and
two report runs as DVC experiments smoke-a and smoke-b that differ in report.examples_per_class, tracked in its
own mlflow.db), then the same facts and screenshots of it, and the before/after comparison against HEAD, in a
temporary folder. Without Chromium (or with
--no-browser) the smoke gathers the MLflow facts and says that it skipped the screenshots; a real run without
Chromium stops unless --no-browser says the facts alone will do.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import yaml
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from browser import CHROMEDRIVER, CHROMIUM, chromium, full_page_png  # noqa: E402  (tests/browser.py: the tests' Chromium)
from _data import add_folder_args, folders, kermany_miniature  # noqa: E402  (bench/ is on sys.path)
from common import PACKAGES  # noqa: E402

SMOKE_RUNS = {"smoke-a": 2, "smoke-b": 3}  # DVC experiment name -> report.examples_per_class
NO_BROWSER = "skipped: no chromium/chromedriver on this machine (`make browser` installs them)"
NOT_ASKED = "skipped: --no-browser"


def smoke_project(folder: Path) -> Path:
    """A project that has run, in miniature: the prepare stage on a generated Kermany folder, then the report
    stage once per SMOKE_RUNS entry as that DVC experiment (its own MLflow parent run), MLflow in
    folder/mlflow.db."""
    from pipeline import prepare, report

    kermany_miniature(folder / "miniature")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["source"] = str(folder / "miniature/kermany_224_train")
    params["prepare"].update(size=32, workers=1)
    params["mlflow"]["tracking_uri"] = "sqlite:///mlflow.db"
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    argv = ["--params", str(folder / "params.yaml")]
    os.environ.pop("DVC_ROOT", None)  # the tracking DB is the project's own, whatever DVC run started us
    prepare.main([*argv, "-S", "mlflow.enabled=false"])
    for name, n in SMOKE_RUNS.items():
        os.environ["DVC_EXP_NAME"] = name
        try:
            report.main([*argv, "-S", f"report.examples_per_class={n}"])
        finally:
            del os.environ["DVC_EXP_NAME"]
    return folder


def tiny_project(folder: Path) -> Path:
    """Every stage's outputs, in miniature (tests/test_report.py's run): a seeded demo archive, 32 px images,
    4 GAN steps, one XGBoost arm per training set, a 4-image visual Turing test export; MLflow off."""
    import numpy as np
    from conftest import stage_args, tiny_params  # tests/ is on sys.path: the tests' own tiny params

    from imaging.demo import write_demo_archive
    from pipeline import (downstream, downstream_summary, fidelity, prepare, synthesize, train_extractor, train_gan,
                          vtt_export)

    write_demo_archive(folder / "demo", np.random.default_rng(7), patients=12, images_per_patient=(2, 3),
                       sizes=(96, 128, 160))
    (folder / "project").mkdir(parents=True, exist_ok=True)
    project = tiny_params(
        folder / "project", folder / "demo", mlflow=dict(enabled=False), vtt=dict(n=2, display_size=64),
        data=dict(source="../demo"),  # relative to the project: the page names no folder of this machine
        gan=dict(width=0.25, steps=4, batch=8, log_every=2, fid_every=2, fid_samples=16, grid_every=0),
        extractor=dict(width=4, dim=16, steps=5, batch=16),
        fidelity=dict(kid_subsets=5, inception_weights="no-such-file.pth", pairs=4),
        downstream=dict(arms=dict(cnn=dict(real=[], synthetic=[]), xgboost=dict(real=["real"], synthetic=["real_synthetic"])),
                        fractions=[1.0], seeds=[0], xgboost=dict(n_estimators=10), bootstrap=dict(samples=20)))
    argv = stage_args(project)
    for stage in (prepare, train_extractor, train_gan, synthesize, fidelity):
        stage.main(argv)
    for trainset in ("real", "real_synthetic"):
        downstream.main([*argv, "--arm", "xgboost", trainset, "1.0", "0"])
    downstream_summary.main(argv)
    vtt_export.main(argv)
    return project


def page_screenshot(page: Path, png: Path) -> dict:
    """Open ``page`` offline, save the whole page as ``png`` (full size) and return what it loaded; fail if
    anything on it needed the network or an image did not decode."""
    d = chromium(Path(tempfile.mkdtemp()), offline=True)
    try:
        d.get(page.as_uri())
        facts = d.execute_script("""return {
            sections: [...document.querySelectorAll('section h2')].map(h => h.textContent),
            images: document.images.length,
            broken_images: [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length,
            charts: document.querySelectorAll('svg').length
                + [...document.images].filter(i => i.src.startsWith('data:image/svg+xml')).length,
            network_requests: performance.getEntriesByType('resource').map(r => r.name)
                .filter(n => !n.startsWith('data:'))}""")
        full_page_png(d, png)
    finally:
        d.quit()
    if facts["broken_images"] or facts["network_requests"]:
        raise SystemExit(f"{page} is not self-contained: {facts}")
    return facts


def save_small(im: Image.Image, png: Path) -> None:
    """At 3/4 scale with a 256-colour palette (tall pages; it keeps the repository small)."""
    im = im.convert("RGB")
    im = im.resize((im.width * 3 // 4, im.height * 3 // 4), Image.LANCZOS)
    im.quantize(256).save(png, optimize=True)


def report_page(project: Path, out: Path) -> dict:
    """The project's reports/index.html, offline, as report_page.png."""
    facts = page_screenshot(project / "reports/index.html", out / "report_page.png")
    save_small(Image.open(out / "report_page.png"), out / "report_page.png")
    return facts


# ---------------------------------------------------------------- the report page before and after a change

class VisibleText(HTMLParser):
    """The text a reader sees on a page, one string per text node, whitespace collapsed, and the sections'
    headings; nothing inside <style>, <script> or an inline <svg> (chart ticks and legends: pictures, as the
    charts are images now)."""

    HIDDEN = {"style", "script", "svg", "title"}

    def __init__(self):
        super().__init__()
        self.texts, self.headings, self._hidden, self._tag = [], [], 0, None

    def handle_starttag(self, tag, attrs):
        self._hidden += tag in self.HIDDEN
        self._tag = tag

    def handle_endtag(self, tag):
        self._hidden -= tag in self.HIDDEN
        self._tag = None

    def handle_data(self, data):
        text = " ".join(data.split())
        if text and not self._hidden:
            self.texts.append(text)
            if self._tag == "h2":
                self.headings.append(text)


def page_facts(page: Path) -> dict:
    """Size, section headings, visible words and pictures of a report page."""
    html = page.read_text(encoding="utf-8")
    parser = VisibleText()
    parser.feed(html)
    return {"bytes": len(html.encode()), "sections": parser.headings, "words": " ".join(parser.texts).split(),
            "images": html.count("<img "), "inline_svg_charts": html.count("<svg"),
            "svg_image_charts": html.count('src="data:image/svg+xml')}


def code_at(rev: str, folder: Path) -> Path:
    """The project's packages as they were at git revision ``rev``, unpacked into ``folder``."""
    archive = subprocess.run(["git", "archive", "--format=tar", rev, *PACKAGES], cwd=ROOT, check=True,
                             capture_output=True).stdout
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def render_report(code: Path, project: Path, folder: Path) -> Path:
    """The report stage of the code in ``code`` on ``project``'s outputs, in a fresh process, MLflow off; its
    page and summary go to ``folder`` (the project's own stay as they are)."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pipeline.report", "--params", str(project / "params.yaml"),
                    "-S", "mlflow.enabled=false", "-S", f"paths.report={folder / 'index.html'}",
                    "-S", f"paths.report_summary={folder / 'summary.json'}"],
                   cwd=code, env={**os.environ, "PYTHONPATH": str(code)}, check=True, capture_output=True)
    return folder / "index.html"


def side_by_side(before: Path, after: Path, labels: tuple[str, str], png: Path) -> None:
    """Two full-page screenshots next to each other, each under its label."""
    shots = [Image.open(p).convert("RGB") for p in (before, after)]
    gap, header = 24, 40
    canvas = Image.new("RGB", (sum(s.width for s in shots) + gap, max(s.height for s in shots) + header), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for shot, label in zip(shots, labels):
        draw.text((x + 20, 12), label, fill="black", font_size=20)
        canvas.paste(shot, (x, header))
        x += shot.width + gap
    save_small(canvas, png)


def before_after(project: Path, rev: str, work: Path, out: Path, browser: bool) -> dict:
    """The project's report page rendered by revision ``rev`` and by this checkout, compared."""
    rendered = work / "before_after"
    pages = {"before": render_report(code_at(rev, rendered / "code_before"), project, rendered / "before"),
             "after": render_report(ROOT, project, rendered / "after")}
    facts = {name: page_facts(page) for name, page in pages.items()}
    before_words, after_words = facts["before"].pop("words"), facts["after"].pop("words")
    result = {"before": {"revision": rev, **facts["before"]}, "after": {"revision": "working tree", **facts["after"]},
              "same_bytes": pages["before"].read_bytes() == pages["after"].read_bytes(),
              "same_sections": facts["before"]["sections"] == facts["after"]["sections"],
              "same_visible_text": before_words == after_words,
              "words_compared": len(after_words)}
    if not result["same_visible_text"]:
        import difflib
        result["text_differences"] = list(difflib.unified_diff(before_words, after_words, lineterm="", n=3))[:200]
    if browser:
        for name, page in pages.items():
            result[name]["browser"] = page_screenshot(page, rendered / f"{name}.png")
        side_by_side(rendered / "before.png", rendered / "after.png",
                     (f"before: {rev}", "after: this checkout"), out / "report_page_before_after.png")
    return result


# MLflow 3's UI: close its assistant side panel (so the runs get the width), pick the model-training
# navigation, and in the comparison show only the params and metrics that differ
TIDY = """
for (const label of ['Close', 'Parameters - Show diff only', 'Metrics - Show diff only']) {
    const b = document.querySelector(`button[aria-label="${label}"]`); if (b) b.click();
}
const mt = [...document.querySelectorAll('button,span,div,label')].filter(e => e.childElementCount === 0
    && e.textContent.trim() === 'Model training')[0];
if (mt) mt.click();
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pick_runs(uri: str, names: list[str] | None):
    """The medaug experiment and two of its parent (pipeline) runs: those of the DVC experiments ``names``, else
    the two latest."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("medaug")
    if exp is None:
        raise SystemExit(f"{uri} has no medaug experiment: run the pipeline there first")
    parents = [r for r in client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
               if "mlflow.parentRunId" not in r.data.tags]
    if names:
        by_name = {r.data.tags.get("dvc_exp_name"): r for r in reversed(parents)}  # the latest run of a name wins
        missing = [n for n in names if n not in by_name]
        if missing:
            raise SystemExit(f"no parent run tagged dvc_exp_name {missing}; there are {sorted(filter(None, by_name))}")
        runs = [by_name[n] for n in names]
    else:
        runs = parents[:2]
    if len(runs) < 2:
        raise SystemExit(f"{uri} has {len(runs)} pipeline run(s); the comparison needs two")
    return exp, runs


def compare_facts(runs) -> dict:
    """What the comparison shows: the runs' ids, metric counts, the params that differ and identity tags."""
    a, b = (r.data for r in runs)
    return {"runs": {r.data.tags.get("dvc_exp_name") or "(workspace)": r.info.run_id for r in runs},
            "metrics_on_each": [len(r.data.metrics) for r in runs],
            "params_that_differ": {k: [a.params.get(k), b.params.get(k)]
                                   for k in sorted(set(a.params) | set(b.params))
                                   if a.params.get(k) != b.params.get(k)},
            "tags": {k: [a.tags.get(k), b.tags.get(k)] for k in ("git_commit", "data_hash", "dvc_exp_name")}}


def shows(d, texts: list[str], timeout: float) -> bool:
    """Wait until the page's text holds all of ``texts`` (the single-page app has fetched and rendered)."""
    end = time.monotonic() + timeout
    while True:
        body = d.execute_script("return document.body ? document.body.innerText : ''") or ""
        if all(t in body for t in texts):
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.5)


def mlflow_screenshots(project: Path, uri: str, exp, runs, out: Path, settle: float = 10) -> dict:
    """The MLflow UI (a server on the project's DB) comparing ``runs``, and its runs table. Each page is taken
    once it shows the runs' names (at most 120 s), then ``settle`` seconds later (charts and tables fill in).
    Returns whether each page showed the runs."""
    ids, names = [r.info.run_id for r in runs], [r.info.run_name for r in runs]
    shown = {}
    port = free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host",
                               "127.0.0.1", "--port", str(port), "--workers", "1"], cwd=project, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(base + "/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        # the app scrolls inside its own panes: a tall window shows the whole comparison table
        d = chromium(Path(tempfile.mkdtemp()), size=(1700, 4200))
        try:
            d.get(f"{base}/#/compare-runs?runs={json.dumps(ids)}&experiments={json.dumps([exp.experiment_id])}")
            shown["compare"] = shows(d, names, 120)
            time.sleep(settle)
            d.execute_script(TIDY)
            time.sleep(2)
            d.save_screenshot(str(out / "mlflow_compare.png"))
            d.set_window_size(1700, 1000)
            d.get(f"{base}/#/experiments/{exp.experiment_id}/runs")
            shown["runs"] = shows(d, names, 120)
            time.sleep(settle)
            d.execute_script(TIDY)
            time.sleep(2)
            d.save_screenshot(str(out / "mlflow_runs.png"))
        finally:
            d.quit()
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    for page, ok in shown.items():
        if not ok:
            print(f"warning: the MLflow {page} page did not show the runs {names} within 120 s; its screenshot may "
                  "be empty", file=sys.stderr)
    return shown


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=ROOT)
    ap.add_argument("--runs", nargs=2, default=None, metavar="EXP_NAME")
    ap.add_argument("--no-browser", action="store_true", help="gather the facts only, without Chromium (no screenshots)")
    ap.add_argument("--tiny", action="store_true", help="make a tiny project that ran every stage first, in --work")
    ap.add_argument("--before-after", metavar="REV", default=None,
                    help="compare the project's report page rendered by git revision REV and by this checkout "
                         "(only that; --smoke compares against HEAD besides its other checks)")
    add_folder_args(ap)
    args = ap.parse_args()
    with folders(args):
        run(args)


def run(args):
    if args.smoke:
        args.project, args.runs = smoke_project(args.work / "smoke_project"), list(SMOKE_RUNS)
    elif args.tiny:
        args.project = tiny_project(args.work / "tiny")
    browser = bool(CHROMIUM and CHROMEDRIVER) and not args.no_browser
    if not browser and not (args.smoke or args.no_browser):
        raise SystemExit("bench/screenshots.py needs chromium and chromedriver: `make browser` installs them "
                         "(or --no-browser: the facts only)")
    project, out = args.project.resolve(), args.results
    if args.before_after and not args.smoke:
        compared = before_after(project, args.before_after, args.work, out, browser)
        print(json.dumps(compared, indent=2))
        (out / "report_before_after.json").write_text(json.dumps(compared, indent=2) + "\n")
        print(f"-> {out}/" + ("report_page_before_after.png, " if browser else "") + "report_before_after.json")
        return
    uri = f"sqlite:///{(project / 'mlflow.db').resolve()}"
    exp, runs = pick_runs(uri, args.runs)
    skipped = NOT_ASKED if args.no_browser else NO_BROWSER
    facts = {"smoke": args.smoke,
             "report_page_offline": report_page(project, out) if browser else skipped,
             "mlflow_compare": compare_facts(runs)}
    if args.smoke:
        facts["report_before_after"] = before_after(project, args.before_after or "HEAD", args.work, out, browser)
    if browser:
        facts["mlflow_ui_showed_the_runs"] = mlflow_screenshots(project, uri, exp, runs, out,
                                                                settle=1 if args.smoke else 10)
    else:
        facts["mlflow_screenshots"] = skipped
    for k, v in facts.items():
        print(f"{k}:", json.dumps(v))
    (out / "screenshots.json").write_text(json.dumps(facts, indent=2) + "\n")
    print(f"-> {out}/" + ("report_page.png, mlflow_compare.png, mlflow_runs.png, " if browser else "") + "screenshots.json")


if __name__ == "__main__":
    main()
