"""Screenshots in headless Chromium of a project that has run: the run report opened from the file system with
every network request failing, and the MLflow UI's comparison of two pipeline (parent) runs.

    python bench/screenshots.py [--project .] [--runs EXP_NAME EXP_NAME]

--runs names two DVC experiments (the parent runs' dvc_exp_name tags); default: the two latest parent runs.
The report page is saved at 3/4 scale with a 256-colour palette (a tall page; it keeps the repository small).
Needs Debian's chromium and chromium-driver (`make browser`). Writes bench/results/report_page.png,
mlflow_compare.png, mlflow_runs.png and screenshots.json (what the report page loaded; the two runs' ids,
metric counts, differing params and identity tags), and prints the same.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from browser import chromium, full_page_png  # noqa: E402  (tests/browser.py: the tests' Chromium)

OUT = ROOT / "bench/results"


def report_page(project: Path) -> dict:
    """Open reports/index.html offline; fail if anything on it needed the network or an image did not decode."""
    d = chromium(Path(tempfile.mkdtemp()), offline=True)
    try:
        d.get((project / "reports/index.html").as_uri())
        facts = d.execute_script("""return {
            sections: [...document.querySelectorAll('section h2')].map(h => h.textContent),
            images: document.images.length,
            broken_images: [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length,
            charts: document.querySelectorAll('svg').length,
            network_requests: performance.getEntriesByType('resource').map(r => r.name)
                .filter(n => !n.startsWith('data:'))}""")
        full_page_png(d, OUT / "report_page.png")
    finally:
        d.quit()
    im = Image.open(OUT / "report_page.png").convert("RGB")
    im = im.resize((im.width * 3 // 4, im.height * 3 // 4), Image.LANCZOS)
    im.quantize(256).save(OUT / "report_page.png", optimize=True)
    if facts["broken_images"] or facts["network_requests"]:
        raise SystemExit(f"report page is not self-contained: {facts}")
    return facts


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


def mlflow_compare(project: Path, names: list[str] | None) -> dict:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{(project / 'mlflow.db').resolve()}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("medaug")
    parents = [r for r in client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
               if "mlflow.parentRunId" not in r.data.tags]
    if names:
        runs = [next(r for r in parents if r.data.tags.get("dvc_exp_name") == n) for n in names]
    else:
        runs = parents[:2]
    ids = [r.info.run_id for r in runs]
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
            time.sleep(12)                     # the single-page app fetches and renders
            d.execute_script(TIDY)
            time.sleep(2)
            d.save_screenshot(str(OUT / "mlflow_compare.png"))
            d.set_window_size(1700, 1000)
            d.get(f"{base}/#/experiments/{exp.experiment_id}/runs")
            time.sleep(10)
            d.execute_script(TIDY)
            time.sleep(2)
            d.save_screenshot(str(OUT / "mlflow_runs.png"))
        finally:
            d.quit()
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    a, b = (r.data for r in runs)
    return {"runs": {r.data.tags.get("dvc_exp_name") or "(workspace)": r.info.run_id for r in runs},
            "metrics_on_each": [len(r.data.metrics) for r in runs],
            "params_that_differ": {k: [a.params.get(k), b.params.get(k)]
                                   for k in sorted(set(a.params) | set(b.params))
                                   if a.params.get(k) != b.params.get(k)},
            "tags": {k: [a.tags.get(k), b.tags.get(k)] for k in ("git_commit", "data_hash", "dvc_exp_name")}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=ROOT)
    ap.add_argument("--runs", nargs=2, default=None, metavar="EXP_NAME")
    args = ap.parse_args()
    project = args.project.resolve()
    OUT.mkdir(parents=True, exist_ok=True)
    facts = {"report_page_offline": report_page(project), "mlflow_compare": mlflow_compare(project, args.runs)}
    for k, v in facts.items():
        print(f"{k}:", json.dumps(v))
    (OUT / "screenshots.json").write_text(json.dumps(facts, indent=2) + "\n")
    print(f"-> {OUT}/report_page.png, mlflow_compare.png, mlflow_runs.png, screenshots.json")


if __name__ == "__main__":
    main()
