"""Check the GPU path on this machine's GPU in a few minutes (`make gpu-check`): one verdict line per check.

    python bench/gpu_check.py [--seconds 5] [--batches 64 128 256] [--workers 8] [--out FILE] [--smoke]

Checks, on generated images (no data needed), with the stage's settings (`auto`: bf16 autocast where the GPU
has native bf16, channels_last, whole-step CUDA graphs, cuDNN autotuner):
  graphs         20 steps eagerly and 20 steps with CUDA graphs from the same state. PASS when the capture
                 stayed on (no fallback) and the weights differ from the eager run's by at most 5% of the
                 distance the eager run travelled (||w_graphs - w_eager|| <= 0.05 ||w_eager - w_start||), or
                 by at most 3x the spread between two eager runs (the autotuner's kernels are not
                 bit-reproducible).
  deterministic  the same with gan.deterministic=true (autotuner off, deterministic algorithms): two eager
                 runs and a run resumed from a checkpoint at step 10 are bit-identical to each other, and the
                 graph run is within 1e-3 of the distance travelled, and a graph run resumed at step 10 is
                 bit-identical to the uninterrupted graph run.
  throughput     training images/s at each batch for the stage's trainer (conditional, width 1, 64x64) and
                 for the pytorch/examples DCGAN recipe (PNG folder, DataLoader workers, fp32) on the same GPU.
                 PASS when ours is faster at every batch.
  evaluation     the domain extractor trained for 200 steps, features and FID through torch-fidelity (the
                 fidelity stage's path) and one downstream CNN epoch on the GPU. PASS when everything is
                 finite and the GPU's FID is within 5% of the CPU's for the same extractor.
Writes bench/results/gpu_check_<gpu>.json (or --out). Exit status 1 when a check fails.

On a machine without CUDA it says so and exits 0. ``--smoke``: the same checks in seconds on tiny
generated data, on whatever device there is (on a CPU the graph parts are skipped); for the tests.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _data import add_folder_args, folders  # noqa: E402

TOL_GRAPHS, SPREAD_FACTOR, TOL_DETERMINISTIC, TOL_FID = 0.05, 3.0, 1e-3, 0.05


def no_cuda_message() -> str:
    built = torch.version.cuda
    hint = ("this torch is a CPU build; on a GPU machine install a CUDA build of torch, then `make install GPU=1` "
            "(README, 'On a GPU')" if built is None else
            f"this torch is built for CUDA {built}, but no device is visible (driver, CUDA_VISIBLE_DEVICES?)")
    return (f"gpu-check: no CUDA device is visible (torch {torch.__version__}): nothing to check on this machine; "
            f"{hint}")


def images(n: int, res: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes of generated (n,1,res,res) float16 images in [-1, 1]: smooth noise, class 1 darker above."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(n, 1, res // 4, res // 4, generator=g), size=res,
                                        mode="bilinear", align_corners=False) * 2 - 1
    y = torch.arange(n) % 2
    x[y == 1, :, : res // 3] -= 0.5
    return x.clamp(-1, 1).numpy().astype(np.float16), y.numpy()


def flat(t) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten().cpu() for m in (t.G, t.D) for p in m.parameters()])


# ---- checks ------------------------------------------------------------------------------------------------
def _trainers(make, state, steps):
    t = make()
    t.load_state_dict(state)
    t.run(steps)
    return t


def check_graphs(make, steps: int, cuda: bool, deterministic: bool) -> dict:
    """Eager twice and with graphs once, from one state; the weights' distances, relative to the distance
    the eager run travelled."""
    from pipeline.runtime import configure_backends

    start = make(graphs=False)
    configure_backends(start.device, deterministic)
    state = start.state_dict()
    w0 = flat(start)
    a = _trainers(lambda: make(graphs=False), state, steps)
    b = _trainers(lambda: make(graphs=False), state, steps)
    travelled = float((flat(a) - w0).norm())
    out = {"steps": steps, "deterministic": deterministic, "travelled": travelled,
           "eager_vs_eager": float((flat(a) - flat(b)).norm()) / travelled,
           "finite": bool(torch.isfinite(flat(a)).all())}
    if deterministic:   # resume: steps/2, checkpoint, a new trainer, the rest
        half = _trainers(lambda: make(graphs=False), state, steps // 2)
        resumed = _trainers(lambda: make(graphs=False), half.state_dict(), steps)
        out["resumed_identical"] = bool(torch.equal(flat(resumed), flat(a)))
    if cuda:
        g = _trainers(lambda: make(graphs=True), state, steps)
        out.update(graph_status=g.graph_status, graphs_vs_eager=float((flat(g) - flat(a)).norm()) / travelled,
                   finite=out["finite"] and bool(torch.isfinite(flat(g)).all()))
        if deterministic:   # a graph run resumed from a checkpoint (new warm-up, new capture)
            half = _trainers(lambda: make(graphs=True), state, steps // 2)
            resumed = _trainers(lambda: make(graphs=True), half.state_dict(), steps)
            out["graphs_resumed_identical"] = bool(torch.equal(flat(resumed), flat(g)))
    if deterministic:
        torch.use_deterministic_algorithms(False)
        configure_backends(start.device, False)
    return out


def verdict_graphs(r: dict) -> tuple[str, str]:
    spread = f"eager vs eager {r['eager_vs_eager']:.2e}"
    if not r["finite"]:
        return "FAIL", "non-finite weights"
    if "graph_status" not in r:
        if r["deterministic"] and not (r["eager_vs_eager"] == 0 and r["resumed_identical"]):
            return "FAIL", f"deterministic eager runs differ ({spread}; resumed identical: {r['resumed_identical']})"
        return "SKIP", f"no CUDA: graphs not run ({spread})"
    if r["graph_status"] != "on":
        return "FAIL", f"capture fell back: {r['graph_status']}"
    d = r["graphs_vs_eager"]
    if r["deterministic"]:
        ok = (d <= TOL_DETERMINISTIC and r["eager_vs_eager"] == 0 and r["resumed_identical"]
              and r["graphs_resumed_identical"])
        return ("PASS" if ok else "FAIL"), (f"graphs vs eager {d:.2e} (tolerance {TOL_DETERMINISTIC:g}), {spread} "
                                            f"(must be 0), resume bit-identical: eager {r['resumed_identical']}, "
                                            f"graphs {r['graphs_resumed_identical']}")
    ok = d <= max(TOL_GRAPHS, SPREAD_FACTOR * r["eager_vs_eager"])
    return ("PASS" if ok else "FAIL"), (f"graphs vs eager {d:.2e} of the distance trained (tolerance "
                                        f"{TOL_GRAPHS:g} or {SPREAD_FACTOR:g}x the spread), {spread}")


def check_throughput(x, y, batches, seconds, workers, device, runtime, width, tmp: Path) -> dict:
    import gan_throughput as gt
    from dcgan.models import GanConfig
    from dcgan.train import TrainConfig
    from pipeline.runtime import configure_backends

    configure_backends(device, False)
    files = gt.write_pngs(x, y, ["a", "b"], tmp / "png")
    tensors = torch.stack([gt.PngFolder(files)[i][0] for i in range(len(files))]).to(torch.float16)
    rows = []
    for batch in batches:
        gan = GanConfig(resolution=x.shape[-1], width=width, num_classes=2)
        cfg = TrainConfig(steps=10**9, batch=batch, diffaugment="translation,cutout", log_every=10**9,
                          precision=runtime["precision"], channels_last=runtime["channels_last"],
                          cuda_graphs=runtime["cuda_graphs"])
        ours = gt.ours_throughput(tensors, torch.from_numpy(y), gan, cfg, device, seconds)
        ref = gt.reference_throughput(files, batch, device, workers, seconds)
        rows.append({"batch": batch, "ours_images_per_second": ours["images_per_second"],
                     "ours_cuda_graphs": ours["cuda_graphs"], "reference_images_per_second": round(ref, 1),
                     "speedup": round(ours["images_per_second"] / ref, 2)})
    return {"precision": runtime["precision"], "channels_last": runtime["channels_last"], "rows": rows,
            "reference_workers": workers, "seconds_per_config": seconds}


def verdict_throughput(r: dict) -> tuple[str, str]:
    text = ", ".join(f"batch {w['batch']}: {w['ours_images_per_second']:.0f} vs {w['reference_images_per_second']:.0f}"
                     f" img/s (x{w['speedup']}, graphs {w['ours_cuda_graphs']})" for w in r["rows"])
    fallback = [w for w in r["rows"] if w["ours_cuda_graphs"].startswith("fallback")]
    ok = all(w["speedup"] > 1 for w in r["rows"]) and not fallback
    return ("PASS" if ok else "FAIL"), f"ours vs pytorch/examples recipe: {text}"


def check_evaluation(x, y, device, precision, steps, cnn_width, cnn_batch) -> dict:
    from evaluation import fidelity as fd
    from evaluation.downstream import CNNClassifier
    from evaluation.features import ExtractorConfig, extract, extractor_state, train_extractor

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    n = len(x) // 2
    cfg = ExtractorConfig(resolution=x.shape[-1], num_classes=2, width=32 if steps >= 100 else 4,
                          dim=256 if steps >= 100 else 16)
    t0 = time.perf_counter()
    net = train_extractor(x, y, cfg, steps=steps, batch=128 if steps >= 100 else 16, seed=0, device=device,
                          precision=precision)
    sync()
    t_extractor = time.perf_counter() - t0
    state = extractor_state(net.cpu())
    f = {}
    for dev in ([device, torch.device("cpu")] if device.type == "cuda" else [device]):
        fa = fd.features(x[:n], fd.DOMAIN, dev, domain_state=state)
        fb = fd.features(x[n:], fd.DOMAIN, dev, domain_state=state)
        f[dev.type] = fd.fid(fa, fb)
    net = net.to(device)
    feats = extract(net, x, precision=precision)
    ref = extract(net.cpu(), x)
    cos = (feats * ref).sum(1) / np.maximum(np.linalg.norm(feats, axis=1) * np.linalg.norm(ref, axis=1), 1e-12)
    t0 = time.perf_counter()
    clf = CNNClassifier(width=cnn_width, epochs=1, batch=cnn_batch, device=str(device), precision=precision,
                        random_state=0).fit(x[:n], y[:n], x[n:], y[n:])
    proba = clf.predict_proba(x[n:])
    sync()
    return {"precision": precision, "extractor_steps": steps, "extractor_seconds": round(t_extractor, 2),
            "fid": f[device.type], "fid_cpu": f["cpu"] if device.type == "cuda" else None, "features_min_cosine_vs_cpu_fp32": float(cos.min()),
            "cnn_epoch_seconds": round(time.perf_counter() - t0, 2), "cnn_val_roc_auc": clf.val_roc_auc_,
            "finite": bool(np.isfinite(feats).all() and np.isfinite(proba).all() and math.isfinite(f[device.type]))}


def verdict_evaluation(r: dict) -> tuple[str, str]:
    text = (f"extractor {r['extractor_steps']} steps in {r['extractor_seconds']} s, FID {r['fid']:.4g}"
            + (f" (CPU {r['fid_cpu']:.4g})" if r["fid_cpu"] is not None else "")
            + f", features cosine vs CPU fp32 >= {r['features_min_cosine_vs_cpu_fp32']:.4f}, CNN epoch "
            f"{r['cnn_epoch_seconds']} s ({r['precision']})")
    ok = r["finite"] and r["features_min_cosine_vs_cpu_fp32"] > 0.99
    if r["fid_cpu"] is not None:
        ok = ok and abs(r["fid"] - r["fid_cpu"]) <= TOL_FID * max(abs(r["fid_cpu"]), 1e-9)
    return ("PASS" if ok else "FAIL"), text


# ---- main --------------------------------------------------------------------------------------------------
def run(args) -> int:
    from dcgan.models import GanConfig
    from dcgan.train import TrainConfig, Trainer
    from pipeline.runtime import resolve_runtime

    auto = {"device": "auto", "precision": "auto", "channels_last": "auto", "cuda_graphs": "auto",
            "deterministic": False}
    runtime = resolve_runtime(auto)
    device = runtime["device"]
    cuda = device.type == "cuda"
    if args.smoke:
        res, n, width, steps, batch, ext_steps = 64, 32, 0.25, 4, 4, 3
        batches, seconds, workers = [4], min(args.seconds, 0.3), 0
    else:
        res, n, width, steps, batch, ext_steps = 64, 4096, 1.0, 20, 128, 200
        batches, seconds, workers = args.batches, args.seconds, args.workers
    x, y = images(n, res)
    name = torch.cuda.get_device_name(device) if cuda else f"{platform.processor() or 'cpu'} x{os.cpu_count()}"
    print(f"gpu-check: {name}; torch {torch.__version__} (CUDA {torch.version.cuda}); {runtime['precision']}, "
          f"channels_last={runtime['channels_last']}, cuda_graphs={runtime['cuda_graphs']}"
          + ("; smoke run" if args.smoke else ""))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def make(graphs: bool, lr_decay: float = 0.0):
        gan = GanConfig(resolution=res, width=width, num_classes=2)
        cfg = TrainConfig(steps=steps, batch=batch, diffaugment="translation,cutout", log_every=5, lr_decay=lr_decay,
                          precision=runtime["precision"], channels_last=runtime["channels_last"],
                          cuda_graphs=graphs and cuda)
        return Trainer(gan, cfg, xt, yt, device, seed=0)

    result = {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda, "smoke": args.smoke,
              "runtime": {k: str(v) for k, v in runtime.items()}, "checks": {}}
    failed = False
    checks = [("graphs", lambda: check_graphs(make, steps, cuda, False), verdict_graphs),
              # with lr_decay the LRs change at every step of the second half, which a graph replays only from
              # the device tensor Adam reads (a float LR would be baked into the capture: graphs drift from eager)
              ("deterministic", lambda: check_graphs(functools.partial(make, lr_decay=0.5), steps, cuda, True),
               verdict_graphs)]
    with tempfile.TemporaryDirectory() as tmp:
        checks += [("throughput", lambda: check_throughput(x, y, batches, seconds, workers, device, runtime, width,
                                                           Path(tmp)), verdict_throughput),
                   ("evaluation", lambda: check_evaluation(x, y, device, runtime["precision"], ext_steps,
                                                           32 if not args.smoke else 4, 64 if not args.smoke else 16),
                    verdict_evaluation)]
        for key, fn, judge in checks:
            t0 = time.perf_counter()
            try:
                r = fn()
                status, text = judge(r)
            except Exception as e:  # noqa: BLE001 - a check that crashes is a failed check; the others still run
                r, status, text = {"error": f"{type(e).__name__}: {e}"[:2000]}, "FAIL", f"{type(e).__name__}: {e}"
            r.update(verdict=status, seconds=round(time.perf_counter() - t0, 1))
            result["checks"][key] = r
            failed |= status == "FAIL"
            print(f"{status:4} {key:13} {text}", flush=True)
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    out = Path(args.out) if args.out else args.results / f"gpu_check_{'smoke_' if args.smoke else ''}{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {out}")
    return 1 if failed else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--seconds", type=float, default=5.0, help="timed seconds per throughput configuration")
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="the recipe's DataLoader workers")
    ap.add_argument("--out", help="the JSON file (default <results>/gpu_check_<device>.json)")
    add_folder_args(ap)  # --smoke: tiny generated data, seconds; runs on a CPU too
    args = ap.parse_args(argv)
    if not torch.cuda.is_available() and not args.smoke:
        print(no_cuda_message())
        return 0
    if torch.cuda.is_available():
        # deterministic cuBLAS needs this before its first call (the deterministic check); it only changes
        # the workspace of the few matmuls (class embedding, D's projection)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    with folders(args):
        return run(args)


if __name__ == "__main__":
    sys.exit(main())
