"""Seeded chest-radiograph phantoms: a PA chest with lungs, heart, spine, ribs and clavicles, and, for
the pneumonia class, patchy airspace opacities. Cheap on a CPU; values in [0, 1] (1 = dense, bright).

Anatomy is drawn per patient (so a patient's images look alike) and jittered per image (position,
rotation, exposure). The classes are learnable but not trivially separable: opacities vary from faint
to dense and from small to lobar, and normal images carry benign lookalikes (nodule-like blobs, dense
vessels) at a comparable contrast.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

BASE = 192  # anatomy is drawn at most this large, then upsampled; fine noise is added at full size


@dataclass(frozen=True)
class Anatomy:
    body_w: float
    body_h: float
    lung_x: float
    lung_y: float
    lung_w: float
    lung_h: float
    heart_x: float
    heart_y: float
    heart_w: float
    heart_h: float
    rib_spacing: float
    rib_phase: float
    tissue: float

    @staticmethod
    def sample(rng: np.random.Generator) -> "Anatomy":
        u = rng.uniform
        return Anatomy(body_w=u(0.78, 0.95), body_h=u(0.95, 1.1), lung_x=u(0.33, 0.42), lung_y=u(-0.08, 0.02),
                       lung_w=u(0.26, 0.33), lung_h=u(0.55, 0.66), heart_x=u(0.08, 0.16), heart_y=u(0.22, 0.32),
                       heart_w=u(0.22, 0.32), heart_h=u(0.2, 0.3), rib_spacing=u(0.095, 0.12),
                       rib_phase=u(0, 1), tissue=u(0.35, 0.5))


def _soft(d: np.ndarray, edge: float) -> np.ndarray:
    """Soft inside-mask from a signed 'distance' (positive inside)."""
    return 1.0 / (1.0 + np.exp(-np.clip(d / edge, -30, 30)))


def _smooth_field(rng: np.random.Generator, n: int, cells: int) -> np.ndarray:
    """Smooth noise in about [-1, 1] on an (n, n) grid, with ``cells`` features across."""
    coarse = rng.standard_normal((cells + 3, cells + 3))
    return ndimage.zoom(coarse, n / (cells + 3), order=3, mode="reflect")[:n, :n] / 1.5


def _blob(u, v, cx, cy, r):
    return np.exp(-((u - cx) ** 2 + (v - cy) ** 2) / (2 * r * r))


def chest_phantom(rng: np.random.Generator, size: int, anatomy: Anatomy, pneumonia: bool,
                  aspect: float = 1.0) -> np.ndarray:
    """One (H, W) radiograph, H = ``size``, W = round(size * aspect), float32 in [0, 1]."""
    n = min(size, BASE)
    nw = max(8, round(n * aspect))
    a = anatomy
    ang = np.deg2rad(rng.normal(0, 2.0))
    dx, dy = rng.normal(0, 0.03, 2)
    y, x = np.mgrid[0:n, 0:nw].astype(np.float32)
    x = (x - nw / 2) / (n / 2)
    y = (y - n / 2) / (n / 2)
    u = np.cos(ang) * x - np.sin(ang) * y - dx
    v = np.sin(ang) * x + np.cos(ang) * y - dy

    body = _soft(1 - np.sqrt((u / a.body_w) ** 2 + ((v - 0.1) / a.body_h) ** 2), 0.02)
    lungs = np.zeros_like(u)
    for side in (-1, 1):
        lx = side * a.lung_x
        taper = np.clip(0.65 + 0.35 * (v - a.lung_y + a.lung_h) / (1.2 * a.lung_h), 0.55, 1.0)
        r = (np.abs((u - lx) / (a.lung_w * taper)) ** 2.4 + np.abs((v - a.lung_y) / a.lung_h) ** 2.4) ** (1 / 2.4)
        lungs = np.maximum(lungs, _soft(1 - r, 0.04))
    heart = _soft(1 - np.sqrt(((u - a.heart_x) / a.heart_w) ** 2 + ((v - a.heart_y) / a.heart_h) ** 2), 0.05)
    spine = _soft(0.055 - np.abs(u + 0.01 * v), 0.01) * _soft(0.95 - v, 0.05)
    ribs = np.zeros_like(u)
    for k in range(11):
        v0 = -0.62 + (k + a.rib_phase) * a.rib_spacing
        curve = v0 + 0.35 * (np.abs(u) - 0.12) ** 2 - 0.05
        ribs += _soft(0.014 - np.abs(v - curve), 0.004) * _soft(0.85 - np.abs(u), 0.05) * _soft(np.abs(u) - 0.06, 0.02)
    clav = np.zeros_like(u)
    for side in (-1, 1):
        line = -0.6 + 0.12 * (np.abs(u) - 0.1)
        clav += _soft(0.025 - np.abs(v - line), 0.006) * _soft(0.55 - np.abs(u), 0.03) * (u * side > 0.08)

    vessels = _smooth_field(rng, max(n, nw), 14)[:n, :nw] * 0.035
    img = a.tissue * body - 0.28 * lungs * (1 - 0.6 * heart) + 0.16 * heart * body
    img += (0.18 * spine + 0.08 * ribs * (0.4 + 0.6 * lungs) + 0.12 * clav) * body + vessels * lungs

    # Findings and lookalikes, at comparable contrast: dense blobs in normals, opacities in pneumonia.
    lung_core = lungs * (1 - heart)
    if pneumonia:
        patchy = np.clip(_smooth_field(rng, max(n, nw), 10)[:n, :nw] + 0.6, 0, None)
        for _ in range(rng.integers(1, 4)):
            side = rng.choice([-1, 1])
            cx = side * a.lung_x + rng.normal(0, a.lung_w * 0.35)
            cy = a.lung_y + rng.uniform(-0.1, 0.75) * a.lung_h
            amp = rng.uniform(0.05, 0.2)
            img += amp * _blob(u, v, cx, cy, rng.uniform(0.07, 0.2)) * patchy * lung_core
    if rng.random() < 0.5:  # benign lookalike: a nodule or dense vessel crossing
        side = rng.choice([-1, 1])
        cx = side * a.lung_x + rng.normal(0, a.lung_w * 0.3)
        cy = a.lung_y + rng.uniform(-0.5, 0.5) * a.lung_h
        img += rng.uniform(0.04, 0.12) * _blob(u, v, cx, cy, rng.uniform(0.02, 0.06)) * lung_core

    img = img * rng.uniform(0.85, 1.15) + rng.uniform(-0.03, 0.05)  # exposure
    if size != n:
        img = ndimage.zoom(img, size / n, order=1)
    img = img + rng.normal(0, 0.012, img.shape)  # quantum noise at full resolution
    return np.clip(img, 0.0, 1.0).astype(np.float32)
