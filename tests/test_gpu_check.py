"""bench/gpu_check.py: its no-CUDA path, its smoke run on this machine, and its verdicts."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import gpu_check  # noqa: E402


def test_without_cuda_it_says_so_and_exits_0(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gpu-check: no CUDA device is visible") and "make install GPU=1" in out
    assert not (tmp_path / "r.json").exists()   # nothing measured, nothing written


# The --smoke run itself (one verdict per check, the JSON it writes): tests/test_bench_smoke.py.

GRAPHS = {"finite": True, "deterministic": False, "eager_vs_eager": 0.01, "graph_status": "on", "graphs_vs_eager": 0.02,
          "graphs_resumed_identical": True}


@pytest.mark.parametrize("change,verdict", [
    ({}, "PASS"),
    ({"graphs_vs_eager": 0.029}, "PASS"),                              # within 3x the eager spread
    ({"graphs_vs_eager": 0.2}, "FAIL"),
    ({"eager_vs_eager": 0.0, "graphs_vs_eager": 0.049}, "PASS"),       # within the 5% tolerance
    ({"graph_status": "fallback (RuntimeError: x)"}, "FAIL"),
    ({"finite": False}, "FAIL"),
    ({"deterministic": True, "eager_vs_eager": 0.0, "resumed_identical": True, "graphs_vs_eager": 5e-4}, "PASS"),
    ({"deterministic": True, "eager_vs_eager": 1e-7, "resumed_identical": True, "graphs_vs_eager": 5e-4}, "FAIL"),
    ({"deterministic": True, "eager_vs_eager": 0.0, "resumed_identical": False, "graphs_vs_eager": 0.0}, "FAIL"),
    ({"deterministic": True, "eager_vs_eager": 0.0, "resumed_identical": True, "graphs_vs_eager": 0.0,
      "graphs_resumed_identical": False}, "FAIL"),
])
def test_graph_verdicts(change, verdict):
    assert gpu_check.verdict_graphs({**GRAPHS, **change})[0] == verdict


def test_throughput_verdict_needs_a_speedup_everywhere_and_no_fallback():
    row = {"batch": 64, "ours_images_per_second": 200.0, "reference_images_per_second": 100.0, "speedup": 2.0,
           "ours_cuda_graphs": "on"}
    assert gpu_check.verdict_throughput({"rows": [row]})[0] == "PASS"
    assert gpu_check.verdict_throughput({"rows": [row, {**row, "batch": 256, "speedup": 0.9}]})[0] == "FAIL"
    assert gpu_check.verdict_throughput({"rows": [{**row, "ours_cuda_graphs": "fallback (x)"}]})[0] == "FAIL"


# ---- the GPU install path (make install GPU=1) -----------------------------------------------------------------
def _pins(path: Path) -> dict:
    from packaging.requirements import Requirement

    reqs = [Requirement(line.split("#")[0].strip()) for line in path.read_text().splitlines()
            if line.split("#")[0].strip()]
    return {r.name: r for r in reqs}


def test_gpu_constraints_keep_every_pin_but_torch_and_torchvision():
    cpu, gpu = _pins(ROOT / "constraints.txt"), _pins(ROOT / "constraints-gpu.txt")
    assert "torch" in cpu and "torch" not in gpu and "torchvision" not in gpu
    assert {k: str(v) for k, v in gpu.items()} == {k: str(v) for k, v in cpu.items() if k not in ("torch", "torchvision")}


@pytest.mark.parametrize("installed,torchvision", [("2.11.0+cu126", "0.26.*"), ("2.4.1", "0.19.*"),
                                                   ("2.13.0+cpu", "0.28.*"), ("2.12.0rc1+cu130", "0.27.*")])
def test_gpu_pins_keep_the_installed_torch(installed, torchvision):
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    sys.path.insert(0, str(ROOT / "tools"))
    import gpu_pins

    pins = gpu_pins.pins(installed).splitlines()
    assert pins[1] == f"torchvision=={torchvision}"
    # pip's rule (PEP 440): a pin without a local label matches the installed build (+cu126), so pip keeps it
    assert pins[0].startswith("torch==") and Version(installed) in SpecifierSet(pins[0][len("torch"):])


@pytest.mark.parametrize("bad", ["1.13.1", "2.3.0", "3.0.0"])
def test_gpu_pins_refuse_a_torch_this_project_does_not_run_on(bad):
    sys.path.insert(0, str(ROOT / "tools"))
    import gpu_pins

    with pytest.raises(ValueError, match="install torch >= 2.4"):
        gpu_pins.pins(bad)


@pytest.mark.skipif(torch.version.cuda is not None, reason="this torch is a CUDA build")
def test_gpu_pins_refuse_a_cpu_torch():
    run = subprocess.run([sys.executable, str(ROOT / "tools/gpu_pins.py")], capture_output=True, text=True)
    assert run.returncode == 1 and run.stdout == "" and "is a CPU build" in run.stderr


def test_make_install_gpu_keeps_the_installed_torch():
    run = subprocess.run(["make", "-n", "-B", "install", "GPU=1"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert any("-m venv --system-site-packages" in line for line in lines)
    assert any(line.endswith("tools/gpu_pins.py > .gpu-pins.txt") for line in lines)
    install = [line for line in lines if "pip install" in line and "-e" in line]
    assert len(install) == 1 and "-c constraints-gpu.txt -c .gpu-pins.txt" in install[0]
    assert "-c constraints.txt" not in install[0]
