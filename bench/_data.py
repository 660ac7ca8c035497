"""The real data the benchmarks share: the Kermany train folder in ../shared/data, prepared by the prepare
stage itself into bench/work/shared/kermany[<size>] on first use (the patient-level split included)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def kermany(shared: Path, size: int = 64) -> Path:
    out = ROOT / f"bench/work/shared/kermany{'' if size == 64 else size}"
    if not (out / "images.npy").exists():
        from pipeline import prepare
        prepare.main(["--params", str(ROOT / "params.yaml"), "-S", f"data.source={Path(shared) / 'kermany_224_train'}",
                      "-S", f"paths.prepared={out}", "-S", f"prepare.size={size}", "-S", "mlflow.enabled=false"])
    return out
