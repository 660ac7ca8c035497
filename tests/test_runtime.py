"""Device, precision and backend choices (pipeline/runtime.py) and the CUDA-only calls of the training loop,
checked on a CPU: GPU-only settings are refused or honoured, never dropped, and the any-device logic (a
trainer on cuda:1 seeds, streams and syncs cuda:1) is exercised with torch.cuda's calls stubbed."""
import contextlib
import json
import os
import warnings

import pytest
import torch
from conftest import stage_args, tiny_params

import dcgan.train as dt
from pipeline import prepare, train_gan
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


# ---- the training loop's CUDA calls, stubbed --------------------------------------------------------------
class FakeGenerator:
    def __init__(self):
        self.seed = None

    def manual_seed(self, seed):
        self.seed = seed
        return self


def test_seeds_reach_the_trainers_device(monkeypatch):
    gens = (FakeGenerator(), FakeGenerator())
    monkeypatch.setattr(torch.cuda, "default_generators", gens)
    assert dt.seed_device(torch.device("cuda:1"), 3001) is None          # None: the device's default generator
    assert gens[1].seed == 3001 and gens[0].seed is None
    cpu = dt.seed_device(torch.device("cpu"), 3001)
    assert cpu.initial_seed() == 3001 and cpu.device == torch.device("cpu")


def test_graph_runs_on_the_trainers_device(monkeypatch):
    log = []

    class Stream:
        def __init__(self, device=None):
            self.device = torch.device(device)

        def wait_stream(self, other):
            log.append(("wait", self.device, other.device))

    class Graph:
        def replay(self):
            log.append("replay")

        def reset(self):
            log.append("reset")

    @contextlib.contextmanager
    def ctx(name, arg, **kw):
        log.append((f"enter {name}", arg, *kw.values()))
        yield
        log.append(f"exit {name}")

    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda d=None: Stream(d))
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "device", lambda d: ctx("device", torch.device(d)))
    monkeypatch.setattr(torch.cuda, "stream", lambda s: ctx("stream", s.device))
    monkeypatch.setattr(torch.cuda, "graph", lambda g, stream=None: ctx("graph", type(g).__name__, stream=stream.device))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: log.append(("sync", torch.device(d))))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: log.append("empty_cache"))

    dev = torch.device("cuda:1")
    sg = dt.StepGraph(dev)
    assert sg.stream.device == dev
    sg.warmup(lambda: log.append("step"))
    assert log == [("wait", dev, dev), ("enter device", dev), ("enter stream", dev), "step", "exit stream",
                   "exit device", ("wait", dev, dev)]
    log.clear()
    sg.capture(lambda: log.append("step"))
    sg.replay()
    sg.sync()
    assert log == [("enter device", dev), ("enter graph", "Graph", dev), "step", "exit graph", "exit device",
                   "replay", ("sync", dev)]
    log.clear()
    sg.drop()
    assert log == ["reset", "empty_cache"] and sg.graph is None


def test_cuda_graphs_are_refused_by_the_trainer_without_cuda():
    from dcgan.models import GanConfig

    x = torch.zeros(8, 1, 16, 16)
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        dt.Trainer(GanConfig(resolution=16, width=0.25, num_classes=0), dt.TrainConfig(batch=4, cuda_graphs=True),
                   x, None, "cpu", 0)


# ---- the stage: run key and the recorded graph status --------------------------------------------------------
def test_switching_graphs_keeps_the_run_key(no_cuda):
    g = {"loss": "bce", "cuda_graphs": "auto", "deterministic": False, "steps": 10}
    rt = resolve_runtime(AUTO)
    key = train_gan.run_key(g, rt, 0, "h", 1)
    assert train_gan.run_key({**g, "cuda_graphs": False, "deterministic": True}, {**rt, "cuda_graphs": True,
                             "deterministic": True}, 0, "h", 1) == key
    assert train_gan.run_key({**g, "loss": "hinge"}, rt, 0, "h", 1) != key
    assert train_gan.run_key(g, {**rt, "precision": "bf16"}, 0, "h", 1) != key


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
    monkeypatch.setattr(dt, "StepGraph", FailingCapture)
    monkeypatch.setattr(dt, "graphs_unsupported", lambda device, world: None)


def tiny_trainer(cuda_graphs=False, seed=3):
    from dcgan.models import GanConfig

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(24, 1, 16, 16, generator=gen) * 2 - 1
    y = torch.arange(24) % 2
    cfg = dt.TrainConfig(steps=10, batch=8, log_every=2, diffaugment="translation,cutout", cuda_graphs=cuda_graphs)
    return dt.Trainer(GanConfig(resolution=16, width=0.25, num_classes=2), cfg, x, y, "cpu", seed)


def test_failed_capture_falls_back_and_trains_on_from_the_same_state(failing_capture):
    eager = tiny_trainer()
    eager.run(10)
    t = tiny_trainer(cuda_graphs=True)
    assert t.graph_status == "on"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t.run(10)
    assert [str(w.message) for w in caught] == [
        "CUDA graph capture failed at step 3 (RuntimeError: CUDA error: operation not permitted when stream is "
        "capturing); training goes on with eager steps from the same state. Set gan.cuda_graphs=false to skip "
        "the attempt."]
    assert t.step == 10 and [h["step"] for h in t.history] == [2, 4, 6, 8, 10]
    assert t.graph_status == "fallback (RuntimeError: CUDA error: operation not permitted when stream is capturing)"
    assert not t.use_graphs and t._graph is None
    assert all(p.requires_grad for p in t.D.parameters())
    assert not any(g["capturable"] for o in (t.opt_d, t.opt_g) for g in o.param_groups)
    # three eager warm-up steps, the failed capture redone eagerly, eager from then on: the eager run exactly
    for a, b in zip(eager.state_dict()["G"].values(), t.state_dict()["G"].values()):
        assert torch.equal(a, b)
    for a, b in zip(eager.D.parameters(), t.D.parameters()):
        assert torch.equal(a, b)
    assert [h["loss_d"] for h in t.history] == [h["loss_d"] for h in eager.history]


def test_fallback_syncs_and_drops_the_graph(failing_capture):
    t = tiny_trainer(cuda_graphs=True)
    graph = t._graph
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t.run(5)
    assert graph.calls == ["warmup"] * 3 + ["capture", "sync", "drop"]


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
    assert json.loads((project / "reports/gan/summary.json").read_text())["cuda_graphs"] == status

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("medaug")
    run = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("stage") == "train_gan"][0]
    assert run.data.params["gan.resolved_cuda_graphs"] == status
    # the checkpoint resumes with graphs off: cuda_graphs is not in the run key
    monkeypatch.setattr(train_gan, "resolve_runtime", real)
    more = train_gan.main(stage_args(project, "gan.steps=9", "gan.cuda_graphs=false"))
    assert more["resumed_from_step"] == 6 and more["cuda_graphs"] == "off"
