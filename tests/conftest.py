from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from imaging.demo import write_demo_archive

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def demo_archive(tmp_path_factory) -> Path:
    """A small demo archive (every syntax, bit depth and broken file), written once per session."""
    out = tmp_path_factory.mktemp("demo")
    write_demo_archive(out, np.random.default_rng(7), patients=12, images_per_patient=(2, 3), sizes=(96, 128, 160))
    return out


@pytest.fixture
def project(tmp_path) -> Path:
    """A params.yaml in tmp_path (relative paths resolve there), MLflow in a sqlite file beside it."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["mlflow"]["tracking_uri"] = "sqlite:///mlflow.db"
    params["demo"].update(patients=6, images_per_patient=[2, 3], sizes=[96, 128])
    params["prepare"]["workers"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def _merge(into: dict, updates: dict) -> None:
    for k, v in updates.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def tiny_params(folder: Path, demo_archive: Path, **sections) -> Path:
    """Write folder/params.yaml for a small run on the demo archive at 32x32 (MLflow in folder/mlflow.db);
    ``sections`` (e.g. ``gan={"steps": 4}``) are merged into the project's params. Returns ``folder``."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    _merge(params, {"mlflow": {"tracking_uri": "sqlite:///mlflow.db"}, "data": {"source": str(demo_archive)},
                    "prepare": {"size": 32, "workers": 1}})
    _merge(params, sections)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return folder


def stage_args(project: Path, *overrides: str) -> list[str]:
    """A stage's argv for project/params.yaml with ``-S`` overrides."""
    return ["--params", str(project / "params.yaml"), *[a for o in overrides for a in ("-S", o)]]


def gauss(n, d=16, shift=0.0, seed=0):
    """``n`` standard normal feature rows of dimension ``d``, shifted by ``shift``."""
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


def cpu_gen(seed=0):
    return torch.Generator().manual_seed(seed)


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


class FailingCapture:
    """Stands in for StepGraph on a CPU: warm-up steps run eagerly; the capture fails as a CUDA capture does,
    after the half-recorded step has frozen D's weights (a Python-side flag that capture does change)."""

    def __init__(self, device):
        self.graph, self.calls = None, []

    def warmup(self, step):
        self.calls.append("warmup")
        step()

    def capture(self, step):
        self.calls.append("capture")
        step.__self__.D.requires_grad_(False)
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nCUDA kernel errors ...")

    def replay(self):
        raise AssertionError("nothing was captured")

    def sync(self):
        self.calls.append("sync")

    def drop(self):
        self.calls.append("drop")


@pytest.fixture
def failing_capture(monkeypatch):
    """CUDA graphs 'possible' on this CPU, with a capture that fails."""
    import dcgan.train as dcgan_train

    monkeypatch.setattr(dcgan_train, "StepGraph", FailingCapture)
    monkeypatch.setattr(dcgan_train, "graphs_unsupported", lambda device, world: None)


def separable(n=48, res=32, classes=2, seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n,1,res,res) images in [-1,1], labels n % classes; label 1 has its top half black (the classes differ)."""
    x = torch.rand(n, 1, res, res, generator=cpu_gen(seed)) * 2 - 1
    y = torch.arange(n) % classes
    x[y == 1, :, : res // 2] = -1
    return x, y


def separable_float16(n=48, res=32, seed=0):
    """separable() as numpy float16, as prepared images are stored."""
    x, y = separable(n, res, seed=seed)
    return x.numpy().astype(np.float16), y.numpy()
