"""The run report's figures, as data URIs for one self-contained page: charts drawn by matplotlib (SVG), the
real examples per class (a greyscale PNG tile of the prepared images), and the PNGs other stages wrote (sample
grids, nearest-neighbour pairs) as they are.

Same inputs, same bytes: matplotlib writes no date or software name (``metadata``), its SVG ids come from a
fixed ``svg.hashsalt`` instead of random ones, and every chart is drawn under matplotlib's default settings
(a user's matplotlibrc changes nothing). Figures are built with ``matplotlib.figure.Figure``: no pyplot, no
global figure state.
"""
from __future__ import annotations

import base64
import csv
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image

from common.images import tile
from pipeline import outputs
from pipeline.arms import arm_name
from pipeline.prepared import load_split

if TYPE_CHECKING:
    from pipeline.reporting import ReportInputs

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f")
CHART_SETTINGS = {"svg.hashsalt": "medaug-report", "svg.fonttype": "path", "font.size": 8, "axes.titlesize": 9,
                  "axes.titleweight": "bold", "axes.titlelocation": "left", "axes.grid": True,
                  "grid.color": "#eaeef2", "axes.edgecolor": "#8c959f", "legend.frameon": False}
NO_SVG_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}

Series = dict[str, tuple[Sequence[float], Sequence[float]]]


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def svg_uri(svg: bytes) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode()


def gray_png(gray: np.ndarray) -> bytes:
    """A 2-D uint8 array as PNG bytes; PIL writes no text chunks unless asked."""
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="PNG")
    return buf.getvalue()


def _finite_points(xs: Sequence[float], ys: Sequence[float]) -> tuple[list[float], list[float]]:
    kept = [(float(x), float(y)) for x, y in zip(xs, ys) if y is not None and math.isfinite(float(y))]
    return [x for x, _ in kept], [y for _, y in kept]


def line_chart(series: Series, title: str, xlabel: str, ylabel: str = "", size: tuple[int, int] = (540, 270),
               y_range: tuple[float, float] | None = None, diagonal: bool = False) -> bytes:
    """An SVG line chart of ``{name: (xs, ys)}``, ``size`` in CSS pixels; non-finite points are left out and a
    series without any point has no line and no legend entry."""
    import matplotlib as mpl
    from cycler import cycler
    from matplotlib.figure import Figure

    with mpl.rc_context():
        mpl.rcdefaults()
        mpl.rcParams.update({**CHART_SETTINGS, "axes.prop_cycle": cycler(color=COLOURS)})
        fig = Figure(figsize=(size[0] / 96, size[1] / 96), dpi=96, layout="constrained")
        ax = fig.add_subplot()
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if diagonal:
            ax.plot([0, 1], [0, 1], linestyle="--", linewidth=0.8, color="#8c959f")
        drawn = 0
        for name, (xs, ys) in series.items():
            x, y = _finite_points(xs, ys)
            if x:
                ax.plot(x, y, label=name, linewidth=1.4, marker="o" if len(x) == 1 else None, markersize=4)
                drawn += 1
        if y_range:
            ax.set_ylim(*y_range)
        if drawn:
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3)
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center")
        buf = io.BytesIO()
        fig.savefig(buf, format="svg", metadata=NO_SVG_METADATA)
    svg = buf.getvalue()
    return svg[svg.index(b"<svg"):]  # no XML prolog or DOCTYPE (it names a DTD on the web)


def _column(rows: list[dict], key: str) -> list[float]:
    return [float(row[key]) if row.get(key) not in (None, "") else float("nan") for row in rows]


def read_csv(path: Path) -> list[dict]:
    """A CSV a stage wrote, as rows; [] when it did not write it."""
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def example_figures(prepared: Path, classes: list[str], per_class: int) -> list[dict]:
    """The first ``per_class`` real training images of each class, tiled 8 a row, shown at twice their size."""
    if not classes or not (prepared / outputs.IMAGES).is_file():
        return []
    train = load_split(prepared, "train")
    figures = []
    for label, name in enumerate(classes):
        rows = np.flatnonzero(train.labels == label)[:per_class]
        if len(rows):
            grid = tile(train.images[rows], ncol=min(len(rows), 8))
            figures.append({"name": name, "count": len(rows), "src": png_uri(gray_png(grid)),
                            "width": grid.shape[1] * 2})
    return figures


def training_figures(gan_reports: Path) -> list[dict]:
    """Losses, the discriminator's mean outputs and the domain FID against training steps."""
    losses, fid = read_csv(gan_reports / outputs.LOSSES), read_csv(gan_reports / outputs.FID_LOG)
    if not losses:
        return []
    step = _column(losses, "step")
    charts = [("Losses", {"loss D": (step, _column(losses, "loss_d")), "loss G": (step, _column(losses, "loss_g"))},
               None),
              ("Discriminator outputs (mean sigmoid)", {"D(x) real": (step, _column(losses, "d_real")),
                                                        "D(G(z)) fake": (step, _column(losses, "d_fake"))}, (0, 1))]
    if fid:
        charts.append(("Domain FID during training",
                       {"domain FID (val)": (_column(fid, "step"), _column(fid, "fid_domain"))}, None))
    return [{"title": title, "src": svg_uri(line_chart(series, title, "step", y_range=y_range)), "width": 540}
            for title, series, y_range in charts]


def png_files(folder: Path, pattern: str, prefix: str) -> list[dict]:
    """PNGs a stage wrote, in name order; ``name``: the file's stem without ``prefix``."""
    return [{"name": path.stem.removeprefix(prefix), "src": png_uri(path.read_bytes())}
            for path in sorted(folder.glob(pattern))]


def roc_figures(downstream: dict, downstream_reports: Path, seed: int) -> dict[str, dict]:
    """``<classifier>/<fraction_f>`` -> the ROC curves on test of that block's training sets, for ``seed``."""
    figures = {}
    for classifier, fractions in downstream.items():
        for fraction_key, part in fractions.items():
            fraction = float(fraction_key.removeprefix("fraction_"))
            curves = {}
            for trainset, numbers in part.items():
                if "verdict" in numbers:  # a paired difference, not a training set
                    continue
                roc = read_csv(downstream_reports / arm_name(classifier, trainset, fraction, seed) / outputs.ROC)
                if roc:
                    curves[trainset] = (_column(roc, "fpr"), _column(roc, "tpr"))
            if curves:
                title = f"ROC on test, {classifier}, fraction {fraction_key.removeprefix('fraction_')}, seed {seed}"
                chart = line_chart(curves, title, "false positive rate", "true positive rate", (360, 320),
                                   y_range=(0, 1), diagonal=True)
                figures[f"{classifier}/{fraction_key}"] = {"title": title, "src": svg_uri(chart), "width": 360}
    return figures


def draw(inputs: ReportInputs, summary: dict) -> dict:
    """Every figure of the page, from the stage outputs and what the summary found in them."""
    final_grid = inputs.gan_reports / outputs.FINAL_GRID
    downstream = summary["downstream"]
    return {"examples": example_figures(inputs.prepared, summary["data"]["classes"], inputs.examples_per_class),
            "training": training_figures(inputs.gan_reports),
            "samples": png_files(inputs.gan_reports, outputs.CLASS_SAMPLES_GLOB, outputs.CLASS_SAMPLES_PREFIX),
            "final_grid": png_uri(final_grid.read_bytes()) if final_grid.is_file() else None,
            "nearest_pairs": png_files(inputs.fidelity_reports, outputs.NEAREST_PAIRS_GLOB,
                                        outputs.NEAREST_PAIRS_PREFIX),
            "roc": roc_figures(downstream, inputs.downstream_reports, summary["run"]["downstream_seeds"][0])
            if downstream else {}}
