"""HTML building blocks for the run report: one self-contained page (inline CSS, SVG charts, PNGs as data
URIs), so it opens offline, from an MLflow artifact or an e-mail attachment, and looks the same everywhere."""
from __future__ import annotations

import base64
import html
import io
import math
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f")

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1b1f24;
 max-width:1180px;margin:0 auto;padding:0 20px 60px}
h1{font-size:24px;margin:24px 0 4px}h2{font-size:19px;margin:34px 0 8px;border-bottom:1px solid #d0d7de;
 padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
.muted{color:#57606a}.small{font-size:12px}
table{border-collapse:collapse;margin:6px 0 12px}th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
.kv td{text-align:left}.kv td:first-child{color:#57606a}
.flex{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
figure{margin:0}figcaption{font-size:12px;color:#57606a;max-width:560px}
img.px{image-rendering:pixelated}
.helped{color:#1a7f37;font-weight:600}.hurt{color:#cf222e;font-weight:600}
.note{background:#fff8c5;border:1px solid #d4a72c55;padding:6px 10px;border-radius:4px}
nav a{margin-right:12px}
"""


def esc(x) -> str:
    return html.escape(str(x))


def fmt(x, digits: int = 3) -> str:
    """A number for a table cell: n/a for missing, integers as they are."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) >= 100):
        return f"{int(x):,}"
    return f"{x:.{digits}f}" if abs(x) >= 10 ** -digits or x == 0 else f"{x:.2e}"


def ci(mean, interval, digits: int = 3) -> str:
    lo, hi = interval if interval else (None, None)
    return f"{fmt(mean, digits)} [{fmt(lo, digits)}, {fmt(hi, digits)}]"


NUMERIC = re.compile(r"^(n/a|[-+]?[\d.,]+(e[-+]?\d+)?%?( ± \S+)?( \[\S+, \S+\])?)$")


def table(headers: Sequence[str], rows: Iterable[Sequence], cls: str = "") -> str:
    """Cells are HTML; numbers (and "n/a", "x ± s", "x [lo, hi]") are right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="n">{c}</td>' if NUMERIC.match(str(c)) else f"<td>{c}</td>"
                                    for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def kv_table(items: Iterable[tuple[str, object]]) -> str:
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in items)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def gray_png(gray: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="PNG")
    return buf.getvalue()


def img(src: bytes | Path, alt: str, width: int | None = None, pixelated: bool = True) -> str:
    data = Path(src).read_bytes() if isinstance(src, Path) else src
    w = f' width="{width}"' if width else ""
    return f'<img src="{png_uri(data)}" alt="{esc(alt)}"{w}{" class=px" if pixelated else ""}>'


def figure(body: str, caption: str) -> str:
    return f"<figure>{body}<figcaption>{caption}</figcaption></figure>"


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def line_chart(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, xlabel: str,
               ylabel: str = "", width: int = 540, height: int = 270, y_range: tuple[float, float] | None = None,
               diagonal: bool = False) -> str:
    """An inline SVG line chart of ``{name: (xs, ys)}``; non-finite points are skipped."""
    pts = {k: [(float(x), float(y)) for x, y in zip(*v) if y is not None and math.isfinite(float(y))]
           for k, v in series.items()}
    pts = {k: v for k, v in pts.items() if v}
    left, right, top, bottom = 58, 14, 26, 40 + 16 * ((len(pts) + 2) // 3)
    pw, ph = width - left - right, height - top - bottom
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="{esc(title)}" style="font:11px sans-serif">',
           f'<text x="{left}" y="15" style="font-weight:600;font-size:12px">{esc(title)}</text>']
    if not pts:
        out.append(f'<text x="{left}" y="{top + ph / 2}">no data</text></svg>')
        return "".join(out)
    xs = [x for v in pts.values() for x, _ in v]
    ys = [y for v in pts.values() for _, y in v]
    x0, x1 = min(xs), max(xs)
    y0, y1 = y_range or (min(ys), max(ys))
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    pad = 0 if y_range else 0.04 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad
    sx = lambda x: left + (x - x0) / (x1 - x0) * pw  # noqa: E731
    sy = lambda y: top + ph - (y - y0) / (y1 - y0) * ph  # noqa: E731
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#8c959f"/>')
    for t in _ticks(y0, y1):
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" stroke="#eaeef2"/>'
                   f'<text x="{left - 4}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    for t in _ticks(x0, x1):
        out.append(f'<text x="{sx(t):.1f}" y="{top + ph + 14}" text-anchor="middle">{t:g}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{top + ph + 28}" text-anchor="middle">{esc(xlabel)}</text>')
    if ylabel:
        out.append(f'<text transform="translate(13,{top + ph / 2}) rotate(-90)" text-anchor="middle">'
                   f'{esc(ylabel)}</text>')
    if diagonal:
        out.append(f'<line x1="{sx(0):.1f}" y1="{sy(0):.1f}" x2="{sx(1):.1f}" y2="{sy(1):.1f}" stroke="#8c959f" '
                   'stroke-dasharray="4 3"/>')
    for i, (name, v) in enumerate(pts.items()):
        c = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in v)
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.6" points="{path}"/>' if len(v) > 1 else
                   f'<circle cx="{sx(v[0][0]):.1f}" cy="{sy(v[0][1]):.1f}" r="3" fill="{c}"/>')
        lx, ly = left + (i % 3) * (pw / 3), top + ph + 44 + 16 * (i // 3)
        out.append(f'<rect x="{lx:.1f}" y="{ly - 8}" width="14" height="3" fill="{c}"/>'
                   f'<text x="{lx + 18:.1f}" y="{ly - 3}">{esc(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def page(title: str, sections: list[tuple[str, str, str]], header: str) -> str:
    """``sections``: (anchor id, heading, body HTML)."""
    nav = "".join(f'<a href="#{sid}">{esc(h)}</a>' for sid, h, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{esc(h)}</h2>{b}</section>' for sid, h, b in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style></head>'
            f"<body><h1>{esc(title)}</h1>{header}<nav>{nav}</nav>{body}</body></html>\n")
