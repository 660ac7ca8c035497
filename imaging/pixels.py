"""The pixel pipeline: stored values -> area resampling -> modality LUT -> VOI -> MONOCHROME1 inversion
-> [-1, 1].

Order. Resampling runs first, on the stored values, and the intensity chain (modality LUT, VOI, inversion)
runs on the small image. The modality rescale is linear and the inversion is affine, so both commute with
area averaging exactly; the VOI window differs from window-then-average only in output pixels whose
source block straddles an end of the window. Averaging detector values before the display transform is
what a larger detector pixel would record, and it makes the per-image cost one pass over the stored
array instead of several float passes (see bench/prepare_throughput.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

GEOMETRIES = ("pad", "crop")
FULL_RANGE_MAX = 255  # containers up to 8 bits are shown over their full range; wider ones over their own
LOW_SPAN = 0.5  # a prepared image whose content spans less than this (a quarter of [-1, 1]) looks mis-windowed
VOI_MODES = ("window", "minmax", "percentile")


class BlankImage(ValueError):
    """The image holds one value only: there is nothing to window."""


@dataclass(frozen=True)
class PixelConfig:
    size: int = 64
    geometry: str = "pad"  # pad: whole image, letterboxed to a square; crop: centre square
    voi: str = "window"  # window: DICOM VOI LUT/window when present; minmax; percentile
    percentiles: tuple[float, float] = (0.5, 99.5)

    def __post_init__(self):
        if self.geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {GEOMETRIES}, got {self.geometry!r}")
        if self.voi not in VOI_MODES:
            raise ValueError(f"voi must be one of {VOI_MODES}, got {self.voi!r}")
        if not (isinstance(self.size, int) and self.size >= 8):
            raise ValueError(f"size must be an integer >= 8, got {self.size!r}")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")


@dataclass
class Intensity:
    """How stored values become display values, as the file describes it.

    ``modality_lut``/``voi_lut`` are sampled tables ``(x, y)``; ``windows`` holds (center, width) pairs of
    which the first is used; ``value_range`` is the container's range for files that carry no VOI
    (8-bit PNG: (0, 255), 16-bit PNG: (0, 65535)); ``invert`` is set for MONOCHROME1.

    An 8-bit container's full range is its display range. A wider one is not: a 16-bit PNG usually holds
    10-, 12- or 14-bit detector values (PadChest and many archives export so), and stretching 0..65535
    would squeeze them into the darkest few percent. Those use the image's own stored range instead.
    """

    slope: float = 1.0
    intercept: float = 0.0
    modality_lut: tuple[np.ndarray, np.ndarray] | None = None
    windows: list[tuple[float, float]] = field(default_factory=list)
    voi_function: str = "LINEAR"
    voi_lut: tuple[np.ndarray, np.ndarray] | None = None
    value_range: tuple[float, float] | None = None
    invert: bool = False


@lru_cache(maxsize=64)
def area_matrix(n_in: int, n_out: int):
    """(n_out, n_in) sparse matrix (scipy CSR) of exact box-filter (area) weights; each row sums to 1."""
    import scipy.sparse as sp  # here, not at the top: pipeline.inspect imports this module and decodes nothing
    scale = n_in / n_out
    starts = np.arange(n_out) * scale
    ends = starts + scale
    rows, cols, vals = [], [], []
    for j in range(n_out):
        first, last = int(np.floor(starts[j])), min(int(np.ceil(ends[j])), n_in)
        idx = np.arange(first, last)
        w = np.minimum(ends[j], idx + 1) - np.maximum(starts[j], idx)
        keep = w > 1e-9
        rows.append(np.full(keep.sum(), j)), cols.append(idx[keep]), vals.append(w[keep] / scale)
    return sp.csr_matrix((np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(n_out, n_in))


def area_resize(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Area (box) resampling of a 2-D array to (out_h, out_w), float32, as two sparse products.

    Sparse products run single-threaded in a fixed order, so the result is bit-identical whatever the
    number of workers or BLAS threads (a dense BLAS product is not: its summation order varies).
    """
    h, w = img.shape
    rows = area_matrix(h, out_h) @ img.astype(np.float32, copy=False)  # (out_h, w)
    return np.ascontiguousarray((area_matrix(w, out_w) @ rows.T).T)  # (out_h, out_w)


def fit_geometry(stored: np.ndarray, cfg: PixelConfig) -> tuple[np.ndarray, tuple[int, int]]:
    """Resample ``stored`` for the output square: returns the content and its top-left offset.

    pad: the whole image, longest side to ``size``, centred (the margin is filled later);
    crop: the centred square of side min(H, W), resampled to ``size``.
    """
    h, w = stored.shape
    s = cfg.size
    if cfg.geometry == "crop":
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        return area_resize(stored[top:top + side, left:left + side], s, s), (0, 0)
    scale = s / max(h, w)
    ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
    return area_resize(stored, ch, cw), ((s - ch) // 2, (s - cw) // 2)


def window(x: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM VOI window (PS3.3 C.11.2.1.2-3) with output in [0, 1]."""
    function = (function or "LINEAR").upper()
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    if width < 1:
        raise ValueError(f"LINEAR window width must be >= 1, got {width}")
    if width == 1:  # a threshold at the centre
        return (x > center - 0.5).astype(np.float32)
    return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _stretch(m: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if not hi > lo:
        raise BlankImage(f"no contrast to stretch: low {lo:g} >= high {hi:g}")
    return np.clip((m - lo) / (hi - lo), 0.0, 1.0)


def apply_intensity(v: np.ndarray, t: Intensity, cfg: PixelConfig) -> tuple[np.ndarray, str]:
    """Stored values (any float array) -> display values in [0, 1]; also names the VOI used."""
    m = np.interp(v, *t.modality_lut) if t.modality_lut is not None else v * t.slope + t.intercept
    if float(m.max()) == float(m.min()):
        raise BlankImage(f"all pixels equal ({float(m.min()):g})")
    if cfg.voi == "minmax":
        y, used = _stretch(m, float(m.min()), float(m.max())), "minmax"
    elif cfg.voi == "percentile":
        lo, hi = np.percentile(m, cfg.percentiles)
        y, used = _stretch(m, float(lo), float(hi)), "percentile"
    elif t.voi_lut is not None:
        xs, ys = t.voi_lut
        y0, y1 = float(ys.min()), float(ys.max())
        y, used = _stretch(np.interp(m, xs, ys), y0, y1), "voi_lut"
    elif t.windows:
        c, w = t.windows[0]
        y, used = window(m, c, w, t.voi_function), "window"
    elif t.value_range is not None and t.value_range[1] - t.value_range[0] <= FULL_RANGE_MAX:
        y, used = _stretch(m, *t.value_range), "full_range"
    else:
        y, used = _stretch(m, float(m.min()), float(m.max())), "minmax"
    if t.invert:
        y = 1.0 - y
    return y.astype(np.float32, copy=False), used


def prepare_pixels(stored: np.ndarray, t: Intensity, cfg: PixelConfig) -> tuple[np.ndarray, str]:
    """A 2-D stored-value array -> a (size, size) float32 image in [-1, 1] (margin -1), and the VOI used."""
    out, used, _ = prepare_pixels_span(stored, t, cfg)
    return out, used


def prepare_pixels_span(stored: np.ndarray, t: Intensity, cfg: PixelConfig) -> tuple[np.ndarray, str, float]:
    """:func:`prepare_pixels` plus the span (max - min, in [-1, 1] units, so 0..2) of the image content,
    the pad margin left out: a span below :data:`LOW_SPAN` is the mark of a VOI that does not fit."""
    if stored.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {stored.shape}")
    content, (top, left) = fit_geometry(stored, cfg)
    y, used = apply_intensity(content, t, cfg)
    out = np.full((cfg.size, cfg.size), -1.0, dtype=np.float32)
    out[top:top + y.shape[0], left:left + y.shape[1]] = y * 2.0 - 1.0
    return out, used, float(y.max() - y.min()) * 2.0
