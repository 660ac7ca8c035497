"""Make ``import torchvision`` (and so torch_fidelity) work next to a torch build it was not compiled for.

The PyPI torchvision wheel registers its C++ operators at import; next to a CPU-only or other local torch
build that fails with "operator torchvision::nms does not exist". Defining the two operator schemas its
Python side looks up lets the import succeed; torchvision's C++ ops (nms, roi_align, torchvision.io)
stay unavailable, which nothing here uses (PIL reads image files). A no-op where torchvision imports
cleanly. Call ``ensure_torchvision()`` before the first import of torchvision or torch_fidelity.
"""
from __future__ import annotations

import importlib

_done = False


def ensure_torchvision() -> None:
    global _done
    if _done:
        return
    try:
        importlib.import_module("torchvision")
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            raise
        import sys

        import torch

        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]  # the failed, half-initialised import
        lib = torch.library.Library("torchvision", "FRAGMENT")  # noqa: F841 (kept alive in torch's registry)
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _keep.append(lib)
        importlib.import_module("torchvision")
    _done = True


_keep: list = []
