"""The DCGAN training loop (dcgan/train.py) on tiny tensors: objectives, EMA, resume, divergence checks,
bf16 and channels_last, and its CUDA calls (seeding, graph capture and its fallback) with torch.cuda stubbed."""
import contextlib
import copy
import math
import warnings

import pytest
import torch

from conftest import cpu_gen, separable
from dcgan.models import GanConfig, load_generator
from dcgan.train import (DivergenceError, StepGraph, TrainConfig, Trainer, generator_state, seed_device,
                         set_capturable)


def trainer(gan=None, res=32, classes=2, seed=3, **cfg):
    gan = gan or GanConfig(resolution=res, width=0.25, num_classes=classes)
    x, y = separable(24, res, classes=max(classes, 1))
    opts = dict(steps=100, batch=8, log_every=2)
    opts.update(cfg)
    return Trainer(gan, TrainConfig(**opts), x, y if gan.num_classes else None, "cpu", seed)


OPTIONS = [dict(), dict(loss="hinge"), dict(label_smoothing=0.1), dict(diffaugment="translation,cutout"),
           dict(diffaugment="cutout"), dict(ema_decay=0.0), dict(lr_g=1e-3, lr_d=5e-5), dict(r1_gamma=0.5)]


def record_calls(module: torch.nn.Module) -> list[tuple[tuple, torch.Tensor]]:
    """Every forward of ``module`` from now on, as (input tensors, output), cloned."""
    calls = []

    def hook(_, args, output):
        calls.append((tuple(a.detach().clone() if torch.is_tensor(a) else a for a in args), output.detach().clone()))

    module.register_forward_hook(hook)
    return calls


def expected_losses(d_real, d_fake, d_fake_in_g_step, loss, smoothing):
    """The objectives written out from their papers on the logits D returned (not through dcgan.losses)."""
    log_d = torch.nn.functional.logsigmoid   # log D(x) = log sigmoid(logit); log(1 - D(x)) = log sigmoid(-logit)
    if loss == "hinge":
        return (torch.relu(1 - d_real).mean() + torch.relu(1 + d_fake).mean(), -d_fake_in_g_step.mean())
    target = 1 - smoothing   # one-sided: the real target is 1 - s, the fake target stays 0
    d = -(target * log_d(d_real) + (1 - target) * log_d(-d_real)).mean() - log_d(-d_fake).mean()
    return d, -log_d(d_fake_in_g_step).mean()


def largest_adam_step(before, params) -> float:
    return max(float((p.detach() - b).abs().max()) for b, p in zip(before, params))


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults")
@pytest.mark.parametrize("sn", [False, True])
def test_every_option_is_the_objective_and_step_size_the_trainer_runs(opts, sn):
    """One step under each option: the logged D and G losses are the option's objective on the logits D
    returned in that step (label smoothing's target, hinge's margins), and each network moved by its own
    learning rate (Adam's first step changes every weight by at most lr, the ones with a gradient by ~lr)."""
    gan = GanConfig(resolution=32, width=0.25, num_classes=2, spectral_norm=sn)
    t = trainer(gan, log_every=1, **opts)
    g_before, d_before = [p.detach().clone() for p in t.G.parameters()], [p.detach().clone() for p in t.D.parameters()]
    d_calls = record_calls(t.D)
    t.run(1)
    (_, d_real), (_, d_fake), (_, d_fake_in_g_step) = d_calls   # D step: real, fake; G step: fake
    want_d, want_g = expected_losses(d_real, d_fake, d_fake_in_g_step, t.cfg.loss, t.cfg.label_smoothing)
    logged = t.history[-1]
    assert logged["loss_d"] == pytest.approx(float(want_d), rel=1e-5)
    assert logged["loss_g"] == pytest.approx(float(want_g), rel=1e-5)
    assert logged["d_real"] == pytest.approx(float(torch.sigmoid(d_real).mean()), rel=1e-5)
    assert largest_adam_step(g_before, t.G.parameters()) == pytest.approx(t.cfg.lr_g, rel=1e-3)
    assert largest_adam_step(d_before, t.D.parameters()) == pytest.approx(t.cfg.lr_d, rel=1e-3)
    assert (t.G_ema is None) == (t.cfg.ema_decay == 0)


@pytest.mark.parametrize("sn", [False, True])
def test_r1_is_the_gradient_penalty_at_the_real_images_d_saw(sn):
    """With r1_gamma the D step's gradient is that of the objective plus gamma/2 E||grad_x D(x)||^2, written out
    here on a copy of D and the (augmented) inputs D saw, and differs from the objective's alone; loss_d logs the
    objective only. r1_gamma=0 leaves D's gradient as it was."""
    gan = GanConfig(resolution=16, width=0.25, num_classes=2, spectral_norm=sn)
    grads = {}
    for gamma in (0.0, 5.0):
        t = trainer(gan, res=16, log_every=1, diffaugment="translation,cutout", r1_gamma=gamma)
        d0 = copy.deepcopy(t.D)
        d_calls = record_calls(t.D)
        step = t.opt_d.step
        t.opt_d.step = lambda: (grads.setdefault(gamma, [p.grad.clone() for p in t.D.parameters()]), step())
        t.run(1)
        (real_in, y), (fake_in, _) = d_calls[0][0], d_calls[1][0]
        x = real_in.clone().requires_grad_(True)
        d_real, d_fake = d0(x, y), d0(fake_in, y)
        (grad_x,) = torch.autograd.grad(d_real.sum(), x, create_graph=True)
        objective = expected_losses(d_real, d_fake, d_fake, "bce", 0.0)[0]
        want = torch.autograd.grad(objective + gamma / 2 * grad_x.square().sum((1, 2, 3)).mean(), list(d0.parameters()))
        for got, w in zip(grads[gamma], want):
            assert torch.allclose(got, w, rtol=1e-4, atol=1e-6)
        assert t.history[-1]["loss_d"] == pytest.approx(float(objective.detach()), rel=1e-5)
    assert any(not torch.allclose(a, b) for a, b in zip(grads[0.0], grads[5.0]))
    with pytest.raises(ValueError, match="r1_gamma"):
        TrainConfig(r1_gamma=-1.0)


def test_label_smoothing_needs_bce():
    with pytest.raises(ValueError, match="label_smoothing"):
        TrainConfig(loss="hinge", label_smoothing=0.1)


def zeros_form_one_square(image: torch.Tensor, side: int) -> bool:
    """The zero pixels of a (H, W) image fill one rectangle of sides <= ``side`` (a square clipped at the border)."""
    rows, cols = (image == 0).nonzero(as_tuple=True)
    height, width = int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1
    return len(rows) == height * width and max(height, width) <= side


@pytest.mark.parametrize("policy", ["", "translation", "cutout", "translation,cutout"])
def test_diffaugment_changes_what_d_sees_and_not_what_g_makes(policy):
    """D sees translated / cut-out copies of the real batch and of G's images (pixels moved or set to 0, no
    new values), drawn afresh for the D and the G step; G's own output is not augmented. Without a policy D
    sees the real batch and G's images as they are."""
    t = trainer(diffaugment=policy, log_every=1)
    real = t.images[t.perm[:t.local_batch]].clone()   # the first batch of the epoch
    d_calls, g_calls = record_calls(t.D), record_calls(t.G)
    t.run(1)
    [(_, fake)] = g_calls
    (real_seen, _), _ = d_calls[0]
    (fake_seen, _), _ = d_calls[1]
    (fake_seen_in_g_step, _), _ = d_calls[2]
    assert not (fake == 0).any()   # G's tanh output: no exact zeros, so zeros below come from the augmentation
    if not policy:
        assert torch.equal(real_seen, real) and torch.equal(fake_seen, fake) and torch.equal(fake_seen_in_g_step, fake)
        return
    for seen, source in ((real_seen, real), (fake_seen, fake), (fake_seen_in_g_step, fake)):
        changed = [not torch.equal(a, b) for a, b in zip(seen, source)]
        assert sum(changed) >= len(changed) - 1   # a translation may draw a zero shift for an image
        for a, b in zip(seen, source):   # moved or zeroed pixels only
            assert torch.isin(a, torch.cat([b.flatten(), torch.zeros(1)])).all()
        if "cutout" in policy:   # a 16x16 square, at least a quarter of it inside the image
            assert ((seen == 0).flatten(1).sum(1) >= 64).all()
        if policy == "cutout":   # one square per image D sees: G's images are not cut before D's own cutout
            assert all(zeros_form_one_square(a[0], 16) for a in seen)
    assert not torch.equal(fake_seen, fake_seen_in_g_step)   # each step draws its own augmentation


def test_conditional_trainer_gives_g_and_d_the_batch_labels_and_the_label_steers_g():
    t = trainer(log_every=1)
    labels = t.labels[t.perm[:t.local_batch]].clone()
    d_calls, g_calls = record_calls(t.D), record_calls(t.G)
    t.run(1)
    assert all(torch.equal(args[1], labels) for args, _ in d_calls + g_calls)
    g = t.sampler()
    z = torch.randn(4, g.cfg.z_dim, generator=cpu_gen(2))
    with torch.no_grad():
        zero, one = g(z, torch.zeros(4, dtype=torch.long)), g(z, torch.ones(4, dtype=torch.long))
    assert (zero - one).abs().flatten(1).amax(1).min() > 1e-3   # same latents, another class: another image


def test_ema_is_the_ramped_running_average_of_g():
    """G_ema after step t is decay_t * G_ema + (1 - decay_t) * G with decay_t = min(ema_decay, (1 + t) / (10 + t))
    (the warm-up ramp reaches 0.5 at t = 8, so both regimes are exercised), and the sampler uses those weights."""
    t = trainer(ema_decay=0.5)
    average = [p.detach().clone() for p in t.G.parameters()]   # G_ema starts as a copy of G
    for step in range(1, 13):
        t.run(step)
        decay = min(0.5, (1 + step) / (10 + step))
        average = [decay * a + (1 - decay) * p.detach() for a, p in zip(average, t.G.parameters())]
        for ema, want in zip(t.G_ema.parameters(), average):
            torch.testing.assert_close(ema, want, rtol=1e-5, atol=1e-7)
    sampler_weights = dict(t.sampler().named_parameters())
    for name, ema in t.G_ema.named_parameters():
        assert torch.equal(sampler_weights[name], ema)
    assert not torch.equal(sampler_weights["net.0.weight"], dict(t.G.named_parameters())["net.0.weight"])


def test_sampler_output_does_not_depend_on_batch_mates():
    t = trainer()
    t.run(4)
    g = t.sampler()
    z = torch.randn(6, g.cfg.z_dim, generator=cpu_gen(1))
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    with torch.no_grad():
        torch.testing.assert_close(g(z, y)[2:3], g(z[2:3], y[2:3]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lr_decay", [0.0, 0.95])   # 0.95 of 100 steps: the LRs fall from step 5, mid-run here
def test_resume_continues_exactly(lr_decay):
    straight = trainer(diffaugment="translation,cutout", lr_decay=lr_decay)
    straight.run(12)   # 24 images, batch 8: epochs of 3 steps, so this crosses epoch ends
    first = trainer(diffaugment="translation,cutout", lr_decay=lr_decay)
    first.run(7)
    state = first.state_dict()
    second = trainer(diffaugment="translation,cutout", seed=3, lr_decay=lr_decay)
    second.load_state_dict(state)
    second.run(12)
    assert second.step == 12
    for a, b in zip(straight.G_ema.state_dict().values(), second.G_ema.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(straight.D.state_dict().values(), second.D.state_dict().values()):
        assert torch.equal(a, b)
    rows = lambda t: {h["step"]: h["loss_d"] for h in t.history if h["step"] > 8}  # noqa: E731 windows after the resume
    assert rows(second) == rows(straight) and list(rows(second)) == [10, 12]


def test_lr_decay_is_the_linear_fall_adam_reads_at_each_step():
    """lr_decay 0.5 of 10 steps: constant for 5 updates, then 5/5 ... 1/5 of the base LR (the last update's LR
    > 0), in both optimisers, read by Adam itself at each step; the logged LR is the window's last update's.
    lr_decay 0 leaves every LR at its base, a float (what foreach Adam needs when not capturable)."""
    schedules = {0.5: [1, 1, 1, 1, 1, 1, .8, .6, .4, .2], 0.0: [1] * 10, 1.0: [1, .9, .8, .7, .6, .5, .4, .3, .2, .1]}
    for decay, want in schedules.items():
        t = trainer(steps=10, log_every=1, lr_g=1e-3, lr_d=4e-3, lr_decay=decay)
        seen = {"g": [], "d": []}
        t.opt_g.register_step_pre_hook(lambda opt, *_: seen["g"].append(opt.param_groups[0]["lr"]))
        t.opt_d.register_step_pre_hook(lambda opt, *_: seen["d"].append(opt.param_groups[0]["lr"]))
        t.run(10)
        assert seen["g"] == pytest.approx([1e-3 * f for f in want])
        assert seen["d"] == pytest.approx([4e-3 * f for f in want])
        assert all(isinstance(lr, float) for lr in seen["g"] + seen["d"])
        assert [h["lr_g"] for h in t.history] == seen["g"] and [h["lr_d"] for h in t.history] == seen["d"]
    for bad in (1.5, -0.1, 0.04):   # 0.04 of 10 steps rounds to no step at all
        with pytest.raises(ValueError, match="lr_decay"):
            TrainConfig(steps=10, lr_decay=bad)
    with pytest.raises(ValueError, match="ends at step 10"):   # past its end the LRs would be 0
        trainer(steps=10, lr_decay=0.5).run(11)


def test_capturable_adam_gets_a_device_lr_a_schedule_can_change_and_eager_adam_a_float():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))], lr=2e-4)
    set_capturable(opt, True, tensor_lr=True)
    lr = opt.param_groups[0]["lr"]
    assert torch.is_tensor(lr) and lr.device.type == "cpu" and float(lr) == pytest.approx(2e-4)
    set_capturable(opt, False, tensor_lr=True)   # eager: a float, whatever tensor_lr says
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-4) and isinstance(opt.param_groups[0]["lr"], float)
    set_capturable(opt, True)
    assert isinstance(opt.param_groups[0]["lr"], float) and opt.param_groups[0]["capturable"]


def test_checkpoint_for_another_config_is_refused():
    t = trainer()
    other = trainer(GanConfig(resolution=32, width=0.5, num_classes=2))
    with pytest.raises(ValueError, match="checkpoint is for"):
        other.load_state_dict(t.state_dict())


def test_non_finite_losses_stop_training():
    x, y = separable(24)
    x[:] = float("nan")
    t = Trainer(GanConfig(resolution=32, width=0.25, num_classes=2), TrainConfig(steps=10, batch=8, log_every=2),
                x, y, "cpu", 0)
    saved = []
    with pytest.raises(DivergenceError, match="non-finite"):
        t.run(10, checkpoint_every=2, callbacks=__import__("dcgan.train").train.Callbacks(
            on_checkpoint=lambda tr, step: saved.append(step)))
    assert saved == []  # no checkpoint after a bad window


def test_collapsed_discriminator_stops_training_after_patience():
    t = trainer(collapse_patience=2)
    won = torch.tensor([1e-3, 9.0, 0.999, 0.001, 1.0])
    t.acc.copy_(won)
    t._flush(__import__("dcgan.train").train._Window())  # one window: tolerated
    t.acc.copy_(won)
    with pytest.raises(DivergenceError, match="discriminator has won"):
        t._flush(__import__("dcgan.train").train._Window())


def test_generator_state_round_trip():
    t = trainer()
    t.run(2)
    state = generator_state(t, ["a", "b"])
    g = load_generator(state)
    z = torch.randn(3, 100, generator=cpu_gen())
    with torch.no_grad():
        torch.testing.assert_close(g(z, torch.tensor([0, 1, 1])), t.sampler()(z, torch.tensor([0, 1, 1])))
    assert state["classes"] == ["a", "b"] and state["fixed_z"].shape == (64, 100)


def _three_steps(**cfg):
    t = trainer(log_every=1, **cfg)
    start = [p.detach().clone() for p in [*t.G.parameters(), *t.D.parameters()]]
    dtypes = []
    conv = next(m for m in t.D.modules() if isinstance(m, torch.nn.Conv2d))
    hook = conv.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    t.run(3)
    hook.remove()
    update = torch.cat([(p.detach() - s).flatten() for s, p in zip(start, [*t.G.parameters(), *t.D.parameters()])])
    return t, update, dtypes


@pytest.mark.parametrize("channels_last,r1_gamma", [(False, 0.0), (True, 0.0), (False, 0.5)])
def test_bf16_autocast_keeps_fp32_state_and_tracks_the_fp32_run(channels_last, r1_gamma):
    ref, ref_update, ref_dtypes = _three_steps(r1_gamma=r1_gamma)
    t, update, dtypes = _three_steps(precision="bf16", channels_last=channels_last, r1_gamma=r1_gamma)
    assert set(ref_dtypes) == {torch.float32} and set(dtypes) == {torch.bfloat16}   # autocast did run in bf16
    for m in (t.G, t.D, t.G_ema):
        assert {p.dtype for p in m.parameters()} == {torch.float32}
    for opt in (t.opt_g, t.opt_d):
        assert {v.dtype for s in opt.state.values() for k, v in s.items() if k != "step"} == {torch.float32}
    for h, r in zip(t.history, ref.history):
        for k in ("loss_d", "loss_g"):
            assert math.isfinite(h[k]) and abs(h[k] - r[k]) <= 0.02 * abs(r[k]), (k, h, r)
    # Adam's first steps are nearly sign(gradient): tiny gradients may flip, the direction stays
    assert float(torch.nn.functional.cosine_similarity(update, ref_update, 0)) > 0.9
    assert t.grid_images().dtype == torch.float32


def test_channels_last_alone_matches_the_contiguous_run():
    ref, ref_update, _ = _three_steps()
    t, update, _ = _three_steps(channels_last=True)
    convs = [p for m in (t.G, t.D, t.G_ema) for p in m.parameters() if p.ndim == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert float((update - ref_update).norm() / ref_update.norm()) < 1e-3
    for h, r in zip(t.history, ref.history):
        assert h["loss_d"] == pytest.approx(r["loss_d"], rel=1e-4) and h["loss_g"] == pytest.approx(r["loss_g"], rel=1e-4)


def test_checkpoint_from_a_graph_run_resumes_eagerly_and_exactly():
    straight = trainer()
    straight.run(8)
    first = trainer()
    first.run(5)
    state = first.state_dict()
    for key in ("opt_d", "opt_g"):   # what a run with CUDA graphs writes: capturable Adam groups
        for group in state[key]["param_groups"]:
            group["capturable"] = True
    second = trainer()
    second.load_state_dict(state)
    assert not any(g["capturable"] for o in (second.opt_d, second.opt_g) for g in o.param_groups)
    assert all(s["step"].device.type == "cpu" for s in second.opt_d.state.values())
    second.run(8)
    for a, b in zip(straight.G.state_dict().values(), second.G.state_dict().values()):
        assert torch.equal(a, b)


# ---- the CUDA calls, stubbed: a trainer on cuda:1 seeds, streams and syncs cuda:1; a failed capture falls back
class FakeGenerator:
    def __init__(self):
        self.seed = None

    def manual_seed(self, seed):
        self.seed = seed
        return self


def test_seeds_reach_the_trainers_device(monkeypatch):
    gens = (FakeGenerator(), FakeGenerator())
    monkeypatch.setattr(torch.cuda, "default_generators", gens)
    assert seed_device(torch.device("cuda:1"), 3001) is None          # None: the device's default generator
    assert gens[1].seed == 3001 and gens[0].seed is None
    cpu = seed_device(torch.device("cpu"), 3001)
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
    sg = StepGraph(dev)
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
    x = torch.zeros(8, 1, 16, 16)
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        Trainer(GanConfig(resolution=16, width=0.25, num_classes=0), TrainConfig(batch=4, cuda_graphs=True),
                   x, None, "cpu", 0)


@pytest.mark.parametrize("lr_decay", [0.0, 0.8])   # 0.8 of 10 steps: the failed capture (step 3) is mid-decay
def test_failed_capture_falls_back_and_trains_on_from_the_same_state(failing_capture, lr_decay):
    eager = trainer(res=16, steps=10, diffaugment="translation,cutout", lr_decay=lr_decay)
    eager.run(10)
    t = trainer(res=16, steps=10, diffaugment="translation,cutout", cuda_graphs=True, lr_decay=lr_decay)
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
    assert all(isinstance(g["lr"], float) for o in (t.opt_d, t.opt_g) for g in o.param_groups)
    # three eager warm-up steps, the failed capture redone eagerly, eager from then on: the eager run exactly
    for a, b in zip(eager.state_dict()["G"].values(), t.state_dict()["G"].values()):
        assert torch.equal(a, b)
    for a, b in zip(eager.D.parameters(), t.D.parameters()):
        assert torch.equal(a, b)
    assert [h["loss_d"] for h in t.history] == [h["loss_d"] for h in eager.history]


def test_fallback_syncs_and_drops_the_graph(failing_capture):
    t = trainer(res=16, steps=10, diffaugment="translation,cutout", cuda_graphs=True)
    graph = t._graph
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t.run(5)
    assert graph.calls == ["warmup"] * 3 + ["capture", "sync", "drop"]
