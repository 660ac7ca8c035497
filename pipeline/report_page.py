"""The run report's view: the summary (pipeline/reporting.py) and its figures (pipeline/report_figures.py)
rendered by the Jinja2 template pipeline/report_page.html.j2 into one self-contained page (inline CSS, images as
data URIs), so it opens offline, from an MLflow artifact or an e-mail attachment, and looks the same everywhere.
Every value is HTML-escaped by the template engine (autoescape)."""
from __future__ import annotations

import math
from pathlib import Path

TEMPLATE = "report_page.html.j2"  # beside this module; a dep of the report stage in dvc.yaml


def fmt(x, digits: int = 3) -> str:
    """A number for a table cell: n/a for missing, integers as they are."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int) or (x.is_integer() and abs(x) >= 100):
        return f"{int(x):,}"
    return f"{x:.{digits}f}" if abs(x) >= 10 ** -digits or x == 0 else f"{x:.2e}"


def ci(mean, low, high, digits: int = 3) -> str:
    """``mean [low, high]``."""
    return f"{fmt(mean, digits)} [{fmt(low, digits)}, {fmt(high, digits)}]"


def percent(share) -> str:
    return f"{100 * share:.2f}%"


def training_sets(part: dict) -> dict:
    """A downstream block's training sets (the entries that are not paired differences)."""
    return {name: numbers for name, numbers in part.items() if "verdict" not in numbers}


def differences(part: dict) -> dict:
    """A downstream block's paired differences, each against its baseline (they carry a verdict)."""
    return {name: numbers for name, numbers in part.items() if "verdict" in numbers}


def headline_columns(downstream: dict) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The headline table's (training set, header) AUC columns and (paired difference, header) columns.
    real+synthetic+classic aug. is not a default arm: its two columns are there when some block ran it."""
    sets = [("real", "AUC real"), ("real_synthetic", "AUC real+synthetic"), ("synthetic", "AUC synthetic"),
            ("real_classic", "AUC real+classic aug.")]
    diffs = [("real_synthetic-real", "ΔAUC real+synthetic vs real [95% CI]"),
             ("real_synthetic-real_classic", "ΔAUC real+synthetic vs real+classic aug. [95% CI]")]
    if any("real_synthetic_classic" in part for fractions in downstream.values() for part in fractions.values()):
        sets.append(("real_synthetic_classic", "AUC real+synthetic+classic aug."))
        diffs.append(("real_synthetic_classic-real_classic",
                      "ΔAUC real+synthetic+classic aug. vs real+classic aug. [95% CI]"))
    return sets, diffs


def environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(Path(__file__).parent), autoescape=True, trim_blocks=True,
                      lstrip_blocks=True, undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters.update(fmt=fmt, percent=percent)
    env.globals.update(ci=ci, training_sets=training_sets, differences=differences,
                       headline_columns=headline_columns)
    return env


def render(summary: dict, figures: dict, title: str = "medaug run report") -> str:
    """The page: ``summary`` as pipeline.reporting.summarise returns it, ``figures`` as report_figures.draw."""
    return environment().get_template(TEMPLATE).render(title=title, summary=summary, figures=figures)
