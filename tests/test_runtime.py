"""Device, precision and backend choices (pipeline/runtime.py), checked on a CPU: GPU-only settings are
refused or honoured, never dropped; on faked GPUs each device gets what it can run. The GAN stage's run key
covers every param (the graph settings too) and the FID checks' inputs; the stage records a graph capture that
fell back. (The training loop's own CUDA calls, stubbed, are tested in test_dcgan_train.py.)"""
import json
import os
import warnings

import numpy as np
import pytest
import torch
from conftest import stage_args, tiny_params

from common import PACKAGES
from pipeline import prepare, train_gan
from pipeline.prepared import Split
from pipeline.runtime import configure_backends, resolve_device, resolve_precision, resolve_runtime

AUTO = {"device": "auto", "precision": "auto", "channels_last": "auto", "cuda_graphs": "auto", "deterministic": False}


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def fake_cuda(monkeypatch):
    """Two visible GPUs; cuda:0 a Turing card (no native bf16), cuda:1 a Hopper card."""
    caps = {0: (7, 5), 1: (9, 0)}
    index = lambda d: torch.device(d).index if torch.device(d).index is not None else 0  # noqa: E731
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: caps[index(d)])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: ["Tesla T4", "H100"][index(d)])
    monkeypatch.setattr(torch.version, "hip", None)


def test_auto_on_a_cpu(no_cuda):
    rt = resolve_runtime(AUTO)
    assert rt == {"device": torch.device("cpu"), "precision": "fp32", "channels_last": False, "cuda_graphs": False,
                  "deterministic": False}


@pytest.mark.parametrize("key,value,match", [
    ("cuda_graphs", True, "gan.cuda_graphs=true needs a CUDA device"),
    ("device", "cuda", "no CUDA device is visible"),
    ("device", "cuda:1", "no CUDA device is visible"),
    ("cuda_graphs", "yes", "must be auto, true or false"),
    ("precision", "fp16", "must be auto, fp32 or bf16"),
    ("deterministic", "yes", "must be true or false"),
])
def test_gpu_only_settings_are_refused_on_a_cpu(no_cuda, key, value, match):
    with pytest.raises(ValueError, match=match):
        resolve_runtime({**AUTO, key: value})


def test_settings_a_cpu_can_run_are_honoured(no_cuda):
    rt = resolve_runtime({**AUTO, "precision": "bf16", "channels_last": True, "cuda_graphs": False,
                          "deterministic": True})
    assert (rt["precision"], rt["channels_last"], rt["cuda_graphs"], rt["deterministic"]) == ("bf16", True, False, True)


def test_stage_refuses_cuda_graphs_without_cuda(project, no_cuda):
    with pytest.raises(SystemExit, match="train_gan: gan.cuda_graphs=true needs a CUDA device.*set gan.cuda_graphs"):
        train_gan.main(stage_args(project, "gan.cuda_graphs=true"))


def test_auto_on_gpus_picks_per_device(fake_cuda):
    t4 = resolve_runtime({**AUTO, "device": "cuda:0"})
    h100 = resolve_runtime({**AUTO, "device": "cuda:1"})
    assert t4["device"] == torch.device("cuda:0") and t4["precision"] == "fp32"    # would only emulate bf16
    assert h100["device"] == torch.device("cuda:1") and h100["precision"] == "bf16"
    assert h100["channels_last"] and h100["cuda_graphs"]
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda:1")          # torchrun: the local rank's GPU
    assert not resolve_runtime({**AUTO, "device": "cuda"}, local_rank=1, world=2)["cuda_graphs"]  # auto: off
    assert resolve_precision(torch.device("cuda:1"), "bf16") == "bf16"


def test_impossible_gpu_settings_are_refused(fake_cuda):
    with pytest.raises(ValueError, match=r"gan.precision=bf16: cuda:0 \(Tesla T4, compute capability 7.5\)"):
        resolve_runtime({**AUTO, "device": "cuda:0", "precision": "bf16"})
    with pytest.raises(ValueError, match="2 processes"):
        resolve_runtime({**AUTO, "device": "cuda", "cuda_graphs": True}, local_rank=0, world=2)
    with pytest.raises(ValueError, match="only 2 CUDA device"):
        resolve_device("cuda:2")


@pytest.fixture
def backend_calls(monkeypatch):
    """Record the process-wide calls configure_backends makes, and restore what it sets."""
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", torch.device(d))))
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda on, warn_only=False: calls.append(
        ("deterministic", on, warn_only)))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    return calls


def test_backends_on_a_gpu(fake_cuda, backend_calls, monkeypatch):
    configure_backends(torch.device("cuda:1"))
    assert backend_calls == [("set_device", torch.device("cuda:1"))] and torch.backends.cudnn.benchmark
    backend_calls.clear()
    done = configure_backends(torch.device("cuda:1"), deterministic=True)
    assert backend_calls == [("set_device", torch.device("cuda:1")), ("deterministic", True, True)]
    assert not torch.backends.cudnn.benchmark and done["cudnn_benchmark"] is False
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_backends_on_a_cpu(no_cuda, backend_calls):
    configure_backends(torch.device("cpu"))
    assert backend_calls == [] and not torch.backends.cudnn.benchmark
    configure_backends(torch.device("cpu"), deterministic=True)   # honoured on a CPU too
    assert backend_calls == [("deterministic", True, True)]


def test_bench_and_stage_share_the_backend_setup():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for path in ("pipeline/train_gan.py", "bench/gan_throughput.py"):
        text = (root / path).read_text()
        calls = {n.func.id for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert "configure_backends" in calls, path
        assert "cudnn.benchmark" not in text, path


# ---- the stage: run key and the recorded graph status --------------------------------------------------------
def test_the_run_key_covers_every_param_and_the_fid_inputs(no_cuda):
    g = {"loss": "bce", "cuda_graphs": "auto", "deterministic": False, "steps": 10, "checkpoint_every": 5}
    rt = resolve_runtime(AUTO)
    key = train_gan.run_key(g, rt, 0, "h", 1)
    assert train_gan.run_key({**g, "cuda_graphs": False}, rt, 0, "h", 1) == key   # auto, resolved on a CPU: off
    assert train_gan.run_key({**g, "loss": "hinge"}, rt, 0, "h", 1) != key
    assert train_gan.run_key(g, {**rt, "precision": "bf16"}, 0, "h", 1) != key
    # what a finished run writes: the FID checks (the generator kept), logs, grids, the code; more steps or other
    # checkpoints close other log windows; CUDA graphs (capturable Adam) and deterministic algorithms do other
    # arithmetic on CUDA, and summary.json names the graph status
    for changed in ("fid_every", "fid_samples", "log_every", "grid_every", "steps", "checkpoint_every"):
        assert train_gan.run_key({**g, changed: 3}, rt, 0, "h", 1) != key, changed
    for changed in ("cuda_graphs", "deterministic"):
        assert train_gan.run_key(g, {**rt, changed: True}, 0, "h", 1) != key, changed
    assert train_gan.run_key(g, rt, 0, "h", 1, code="other") != key
    assert train_gan.run_key(g, rt, 0, "h", 1, fid="other") != key


def test_the_fid_inputs_follow_the_extractor_file_and_the_val_split(tmp_path):
    extractor = tmp_path / "extractor.pt"
    extractor.write_bytes(b"weights")
    val = lambda label: Split(np.zeros((1, 1, 4, 4), np.float16), np.array([label]),  # noqa: E731
                              [{"sha256": "ab", "label": str(label)}], ["normal", "pneumonia"])
    before = train_gan.fid_inputs(extractor, val(0))
    assert train_gan.fid_inputs(extractor, val(0)) == before
    assert train_gan.fid_inputs(extractor, val(1)) != before
    extractor.write_bytes(b"other weights")
    assert train_gan.fid_inputs(extractor, val(0)) != before


def test_the_code_hash_follows_every_file_of_the_packages(tmp_path):
    for package in PACKAGES:
        (tmp_path / package / "sub").mkdir(parents=True)
        (tmp_path / package / "sub" / "m.py").write_text("x = 1\n")
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "b.py").write_text("y = 1\n")
    before = train_gan.code_hash(tmp_path)
    (tmp_path / "bench" / "b.py").write_text("y = 2\n")   # not the stage's code
    assert train_gan.code_hash(tmp_path) == before
    (tmp_path / "dcgan" / "sub" / "m.py").write_text("x = 2\n")
    assert train_gan.code_hash(tmp_path) != before
    assert train_gan.code_hash() == train_gan.code_hash()   # the repository's own packages


def test_stage_records_the_fallback(project, demo_archive, failing_capture, monkeypatch, no_cuda):
    tiny_params(project, demo_archive, gan=dict(width=0.25, steps=6, batch=8, log_every=3, checkpoint_every=3,
                                                grid_every=0, fid_every=0))
    prepare.main(stage_args(project))
    real = train_gan.resolve_runtime
    monkeypatch.setattr(train_gan, "resolve_runtime", lambda *a: {**real(*a), "cuda_graphs": True})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = train_gan.main(stage_args(project))
    fallback = [w for w in caught if "CUDA graph capture failed" in str(w.message)]
    assert len(fallback) == 1 and "operation not permitted when stream is capturing" in str(fallback[0].message)
    status = "fallback (RuntimeError: CUDA error: operation not permitted when stream is capturing)"
    assert summary["steps"] == 6
    # summary.json, a DVC out, holds no exception text (a CUDA message can carry sizes and addresses)
    assert json.loads((project / "reports/gan/summary.json").read_text())["cuda_graphs"] == "fallback"

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("medaug")
    run = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("stage") == "train_gan"][0]
    assert run.data.params["gan.resolved_cuda_graphs"] == status
    # the same settings resume the finished run; with graphs off it starts over (other arithmetic on CUDA)
    assert train_gan.main(stage_args(project))["resumed_from_step"] == 6
    monkeypatch.setattr(train_gan, "resolve_runtime", real)
    more = train_gan.main(stage_args(project, "gan.cuda_graphs=false"))
    assert more["resumed_from_step"] == 0 and more["cuda_graphs"] == "off"


def _capability(env: dict) -> str:
    import subprocess
    import sys

    code = "import pipeline, torch; print(torch.backends.cpu.get_cpu_capability())"
    clean = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MEDAUG_CPU_ISA")}
    return subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_stages_pin_cpu_kernels_to_avx2_for_identical_outs_across_machines():
    """Trained outs of an AVX-512 machine differ from an AVX2 machine's unless the kernels are pinned (the package
    does it before torch loads); MEDAUG_CPU_ISA=native and a variable the user set are left alone."""
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    if " avx2" not in flags or " fma" not in flags:
        pytest.skip("no AVX2 on this CPU: nothing is pinned")
    assert _capability({}) == "AVX2"
    assert _capability({"ATEN_CPU_CAPABILITY": "default"}) == "DEFAULT"
    assert _capability({"MEDAUG_CPU_ISA": "native"}) in ("AVX2", "AVX512")   # the library's own choice
