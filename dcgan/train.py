"""The training loop: on-device data, D and G steps, EMA, optional CUDA-graph capture, data parallelism,
divergence guard and self-describing checkpoints. No files, params or prints: the caller passes arrays
and callbacks and writes what the callbacks hand it.

Data parallelism (``torchrun``): every process holds the whole (small) training set on its device and
takes its own slice of each global batch from one shared permutation per epoch; gradients are averaged
with one all-reduce per optimiser step. This is what DistributedDataParallel does, done by hand as in
StyleGAN2-ADA/StyleGAN3's training loops, because a GAN step does not fit DDP's one-forward-one-backward
reducer: D runs on real and fake batches before its backward, and the G step back-propagates through D
while D's gradients must be neither reduced nor applied.

CUDA graphs (one process): after a few eager warm-up steps the whole step is recorded once and replayed,
one launch per step. Warm-up, capture and the first replays run inside one guard: any failure there (an op
that syncs, an unsupported kernel) drops the graph, warns once with the reason and goes on with eager
steps from the same state; ``Trainer.graph_status`` says "on", "off" or "fallback (<reason>)".
"""
from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from common.precision import autocast
from dcgan.augment import diff_augment, parse_policy
from dcgan.losses import LOSSES, d_loss, g_loss
from dcgan import models
from dcgan.models import Discriminator, GanConfig, Generator

CHECKPOINT_FORMAT = 1
# Step metrics, in this order in the on-device accumulator.
METRICS = ("loss_d", "loss_g", "d_real", "d_fake")
GRAPH_WARMUP = 3     # eager steps on a side stream before capture (cuDNN autotuning, Adam state allocation)
GRAPH_CHECKED = 2    # replays followed by a device sync, so an asynchronous failure surfaces in the guard


class DivergenceError(RuntimeError):
    """Training stopped: non-finite losses or a collapsed discriminator. The last good checkpoint stands."""


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 5000
    batch: int = 128                     # global batch (split evenly over processes)
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    lr_decay: float = 0.0                # fraction of `steps` at the end over which both LRs fall linearly to 0; 0: off
    loss: str = "bce"                    # bce (non-saturating) | hinge
    label_smoothing: float = 0.0         # one-sided, bce only: real target 1 - s
    r1_gamma: float = 0.0                # R1 penalty weight on D's gradient at real (augmented) images; 0: off
    diffaugment: str = ""                # "translation,cutout", a subset, or "" for none
    ema_decay: float = 0.999             # 0: no EMA, sampling uses the raw generator
    precision: str = "fp32"              # fp32 | bf16 (autocast)
    channels_last: bool = False
    cuda_graphs: bool = False            # capture the whole step (CUDA, one process; falls back to eager)
    log_every: int = 50                  # steps per metrics window (the only host syncs)
    collapse_patience: int = 5           # windows in a row with D(x) > 0.99 and D(G(z)) < 0.01; 0: off
    grid_size: int = 64                  # fixed latents for the sample grids (split over classes)

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"gan.loss must be one of {LOSSES}, got {self.loss!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {self.precision!r}")
        if not 0 <= self.label_smoothing < 0.5 or (self.label_smoothing and self.loss != "bce"):
            raise ValueError(f"label_smoothing must be in [0, 0.5) and needs loss bce, got {self.label_smoothing}"
                             f" with {self.loss}")
        if not 0 <= self.r1_gamma < math.inf:
            raise ValueError(f"r1_gamma must be finite and >= 0, got {self.r1_gamma}")
        if not 0 <= self.lr_decay <= 1 or (self.lr_decay and round(self.lr_decay * self.steps) < 1):
            raise ValueError(f"lr_decay is the fraction of the {self.steps} steps over which the LRs fall to 0 (in "
                             f"[0, 1], 0: off, at least one step), got {self.lr_decay}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.steps < 1 or self.batch < 1 or self.log_every < 1:
            raise ValueError(f"steps, batch and log_every must be positive: {self}")
        parse_policy(self.diffaugment)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d


@dataclass
class Callbacks:
    """Hooks the caller owns (files, MLflow, progress). Each gets the trainer and the step."""
    on_log: Callable[["Trainer", int, dict], None] | None = None          # after each metrics window
    on_epoch: Callable[["Trainer", int, int], None] | None = None         # (trainer, step, epoch) at epoch ends
    on_checkpoint: Callable[["Trainer", int], None] | None = None         # every checkpoint_every steps


@dataclass
class _Window:
    t0: float = field(default_factory=time.perf_counter)
    step0: int = 0


def r1_penalty(d_real: torch.Tensor, real_in: torch.Tensor, gamma: float) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): gamma / 2 * E ||grad_x D(x)||^2 at the real images D saw (augmented, as in
    StyleGAN2-ADA), as a differentiable term of D's loss. With BatchNorm in D the gradient of the summed logits
    also runs through the batch statistics (as in every batched implementation); spectral_norm has no BatchNorm."""
    (grad,) = torch.autograd.grad(d_real.float().sum(), real_in, create_graph=True)
    return gamma / 2 * grad.float().square().flatten(1).sum(1).mean()


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def graphs_unsupported(device: torch.device, world: int) -> str | None:
    """Why whole-step CUDA-graph capture cannot run here, or None when it can."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device, not {device}"
    if world > 1:
        return f"CUDA graphs capture one process's step, and this run has {world} processes"
    return None


def seed_device(device: torch.device, seed: int) -> torch.Generator | None:
    """The per-process random stream for latents and augmentation, seeded with ``seed``.

    CUDA: the default generator of ``device`` itself (not of the current device, which is what
    ``torch.cuda.manual_seed`` seeds), because that is the generator CUDA-graph capture tracks; returns None,
    meaning "the device's default generator". Elsewhere: a new generator on ``device``."""
    if device.type == "cuda":
        torch.cuda.default_generators[device.index].manual_seed(seed)
        return None
    return torch.Generator(device).manual_seed(seed)


class StepGraph:
    """A training step recorded as one CUDA graph on ``device``: warm-up on a side stream of that device,
    capture on a stream of that device, replay. The CUDA calls live here, so tests can stand in for them."""

    def __init__(self, device: torch.device):
        self.device = device
        self.graph: torch.cuda.CUDAGraph | None = None
        self.stream = torch.cuda.Stream(device)   # capture stream on the trainer's device, not cuda:0

    def warmup(self, step: Callable[[], None]) -> None:
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            step()
        current.wait_stream(self.stream)

    def capture(self, step: Callable[[], None]) -> None:
        """Record ``step``; recording runs nothing, so the caller replays it for the current step."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(self.device), torch.cuda.graph(graph, stream=self.stream):
            step()
        self.graph = graph

    def replay(self) -> None:
        self.graph.replay()

    def sync(self) -> None:
        torch.cuda.synchronize(self.device)

    def drop(self) -> None:
        """Free the graph and its memory pool."""
        if self.graph is not None:
            self.graph.reset()
        self.graph = None
        torch.cuda.empty_cache()


def set_capturable(opt: torch.optim.Optimizer, capturable: bool, tensor_lr: bool = False) -> None:
    """Make an Adam instance (and its loaded state) fit for graph capture or for eager steps, so a
    checkpoint written with or without CUDA graphs resumes under either, and a failed capture goes on
    eagerly. Capturable keeps ``step`` on the parameter's device (a graph cannot read host values); eager
    keeps it on the host (no sync per step). ``tensor_lr`` (capturable only): the learning rate becomes a
    device tensor, so a schedule can change it between replays (a graph would replay a float as captured);
    eager Adam keeps a float (with a tensor LR and not capturable, Adam leaves its foreach path for the slow
    per-tensor one). A float made back from a tensor is float32-rounded: the caller sets the exact LR again."""
    for group in opt.param_groups:
        group["capturable"] = capturable
        lr = float(group["lr"])
        group["lr"] = torch.tensor(lr, device=group["params"][0].device) if capturable and tensor_lr else lr
        for p in group["params"]:
            state = opt.state.get(p)
            if state and torch.is_tensor(state.get("step")):
                state["step"] = state["step"].to(p.device if capturable else "cpu", torch.float32)


def _reason(e: BaseException) -> str:
    """The first failure in an exception chain (the capture's own error, not the one its cleanup raised)."""
    while e.__context__ is not None and e.__cause__ is None:
        e = e.__context__
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


@torch.no_grad()
def recalibrate_bn(g: Generator, class_probs: torch.Tensor | None = None, batches: int = 8, batch: int = 128,
                   seed: int = 0) -> Generator:
    """Re-estimate G's BatchNorm statistics for its own weights (BigGAN's "standing statistics").

    Needed for the EMA generator, whose averaged weights do not match the raw generator's running
    statistics; afterwards G runs in eval mode, so an image depends only on its latent and label, never on
    the rest of its batch. Labels are drawn with ``class_probs`` (the training mix, which is what the
    batch statistics saw during training; uniform when None). Returns ``g`` in eval mode.
    """
    device = next(g.parameters()).device
    bns = [m for m in g.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    gen = torch.Generator().manual_seed(seed)
    g.train()
    for _ in range(batches):
        z = torch.randn(batch, g.cfg.z_dim, generator=gen).to(device)
        y = None
        if g.cfg.num_classes:
            probs = class_probs if class_probs is not None else torch.ones(g.cfg.num_classes)
            y = torch.multinomial(probs.float().cpu(), batch, replacement=True, generator=gen).to(device)
        g(z, y)
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    return g.eval()


class Trainer:
    """Holds networks, optimisers, EMA, data and RNG state; ``run(until)`` trains to a step count.

    images: (N, 1, R, R) tensor in [-1, 1] (any float dtype; kept as given on ``device``);
    labels: (N,) int64 class indices, or None when unconditional.
    """

    def __init__(self, gan: GanConfig, cfg: TrainConfig, images: torch.Tensor, labels: torch.Tensor | None,
                 device: torch.device | str, seed: int):
        if images.ndim != 4 or images.shape[1] != gan.channels or images.shape[-1] != gan.resolution \
                or images.shape[-2] != gan.resolution:
            raise ValueError(f"expected (N,{gan.channels},{gan.resolution},{gan.resolution}) images, "
                             f"got {tuple(images.shape)}")
        if gan.num_classes and (labels is None or len(labels) != len(images)):
            raise ValueError("a conditional GAN needs one label per image")
        if gan.num_classes and (int(labels.min()) < 0 or int(labels.max()) >= gan.num_classes):
            raise ValueError(f"labels must be in 0..{gan.num_classes - 1}, got {int(labels.min())}..{int(labels.max())}")
        self.gan, self.cfg, self.seed = gan, cfg, int(seed)
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.rank, self.world = _world()
        if cfg.batch % self.world:
            raise ValueError(f"gan.batch {cfg.batch} is not divisible by the {self.world} processes")
        self.local_batch = cfg.batch // self.world
        self.cuda = self.device.type == "cuda"
        if cfg.cuda_graphs and graphs_unsupported(self.device, self.world):
            raise ValueError(f"cuda_graphs=True: {graphs_unsupported(self.device, self.world)}; set it to False")
        self.use_graphs = bool(cfg.cuda_graphs)
        self.graph_failure: str | None = None    # why capture fell back to eager steps, if it did
        self.policy = parse_policy(cfg.diffaugment)
        self.n = len(images)
        self.steps_per_epoch = math.ceil(self.n / cfg.batch)

        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.long) if gan.num_classes else None

        with torch.random.fork_rng(devices=[]):  # identical init on every process, global RNG untouched
            torch.manual_seed(self.seed)
            self.G, self.D = Generator(gan).to(self.device), Discriminator(gan).to(self.device)
        self.G_ema = copy.deepcopy(self.G).requires_grad_(False) if cfg.ema_decay > 0 else None
        if cfg.channels_last:
            for m in (self.G, self.D, self.G_ema):
                if m is not None:
                    m.to(memory_format=torch.channels_last)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=tuple(cfg.betas))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=tuple(cfg.betas))
        self._capturable_steps()
        self.autocast = autocast(self.device, cfg.precision)

        # Random streams. Latents/augmentation: per process. Epoch permutations: shared by all processes,
        # drawn on the device (no host copy, no sync). On CUDA the latents use the device's default
        # generator, the one graph capture tracks.
        self.gen = seed_device(self.device, self.seed * 1000 + self.rank)
        self.perm_gen = torch.Generator(self.device).manual_seed(self.seed)
        fixed = torch.Generator().manual_seed(self.seed + 1)
        self.fixed_z = torch.randn(cfg.grid_size, gan.z_dim, generator=fixed)
        self.fixed_y = (torch.arange(cfg.grid_size) * gan.num_classes // cfg.grid_size
                        if gan.num_classes else None)  # class blocks, in class order

        self.step = 0
        self.history: list[dict] = []
        self.perm = torch.randperm(self.n, generator=self.perm_gen, device=self.device)
        self.pos = torch.zeros((), dtype=torch.long, device=self.device)      # batches taken this epoch
        self.ema_t = torch.zeros((), dtype=torch.float32, device=self.device)  # EMA updates so far
        self.acc = torch.zeros(len(METRICS) + 1, device=self.device)          # sums + count of steps
        self._graph: StepGraph | None = StepGraph(self.device) if self.use_graphs else None
        self._warm = 0
        self._replays = 0
        self._collapsed = 0
        self._arange = torch.arange(self.local_batch, device=self.device) + self.rank * self.local_batch

    # ---- one step -------------------------------------------------------------------------------------
    def _batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = self.perm[(self.pos * self.cfg.batch + self._arange) % self.n]
        self.pos += 1
        x = self.images[idx].float()
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, (self.labels[idx] if self.labels is not None else None)

    def _aug(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.policy, self.gen) if self.policy else x

    def _allreduce(self, params) -> None:
        if self.world == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.flatten() for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def _train_step(self) -> None:
        cfg = self.cfg
        real, y = self._batch()
        z = torch.randn(self.local_batch, self.gan.z_dim, device=self.device, generator=self.gen)
        # D step: maximise log D(x) + log(1 - D(G(z))) (bce) or the hinge margin
        with self.autocast:
            fake = self.G(z, y)                                                 # (B, 1, R, R)
            real_in = self._aug(real)
            if cfg.r1_gamma:
                real_in = real_in.detach().requires_grad_(True)
            d_real = self.D(real_in, y)                                         # (B,) logits
            d_fake = self.D(self._aug(fake.detach()), y)
            loss_d = d_loss(d_real, d_fake, cfg.loss, cfg.label_smoothing)
        self.opt_d.zero_grad(set_to_none=True)
        (loss_d + r1_penalty(d_real, real_in, cfg.r1_gamma) if cfg.r1_gamma else loss_d).backward()
        self._allreduce(self.D.parameters())
        self.opt_d.step()
        # G step: maximise log D(G(z)) (non-saturating) or D(G(z)) (hinge); D's weights are not trained here
        self.D.requires_grad_(False)
        with self.autocast:
            loss_g = g_loss(self.D(self._aug(fake), y), cfg.loss)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self._allreduce(self.G.parameters())
        self.opt_g.step()
        self.D.requires_grad_(True)
        # EMA of G with a warm-up ramp, min(decay, (1 + t) / (10 + t)), so early averages are not stale
        if self.G_ema is not None:
            self.ema_t += 1
            w = 1 - torch.clamp((1 + self.ema_t) / (10 + self.ema_t), max=cfg.ema_decay)
            for pe, p in zip(self.G_ema.parameters(), self.G.parameters()):
                pe.lerp_(p.detach(), w)
        with torch.no_grad():
            self.acc += torch.stack([loss_d.detach(), loss_g.detach(), torch.sigmoid(d_real.float()).mean(),
                                     torch.sigmoid(d_fake.float()).mean(), torch.ones((), device=self.device)])

    def _graph_step(self) -> bool:
        """One step through the CUDA graph: warm-up, capture and the first replays run inside one guard.
        Returns False, with the graph dropped and the trainer set to eager steps, when any of them fails;
        the caller then runs this step eagerly. A failed capture or a replay that raised ran nothing, so the
        training state is the one before the step (only Python-side flags a half-recorded step changed need
        restoring); the warm-up steps are ordinary eager steps, on a side stream."""
        try:
            if self._warm < GRAPH_WARMUP:
                self._graph.warmup(self._train_step)
                self._warm += 1
                return True
            if self._graph.graph is None:
                self.opt_d.zero_grad(set_to_none=True)  # grads are then allocated in the graph's pool
                self.opt_g.zero_grad(set_to_none=True)
                set_capturable(self.opt_d, True, self._tensor_lr)
                set_capturable(self.opt_g, True, self._tensor_lr)
                self._graph.capture(self._train_step)
            self._graph.replay()
            if self._replays < GRAPH_CHECKED:
                self._graph.sync()
            self._replays += 1
            return True
        except Exception as e:  # noqa: BLE001 - any capture failure: fall back, never lose the run
            self._fall_back(e)
            return False

    def _fall_back(self, e: BaseException) -> None:
        reason = _reason(e)
        try:
            self._graph.sync()
            self._graph.drop()
        except Exception as e2:  # noqa: BLE001
            raise RuntimeError(f"CUDA graph capture failed ({reason}) and the device did not recover "
                               f"({_reason(e2)}); run again to resume from the last checkpoint, or set "
                               "gan.cuda_graphs=false to train without graphs (from the start)") from e
        self._graph, self.use_graphs, self.graph_failure = None, False, reason
        self.D.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        self.opt_g.zero_grad(set_to_none=True)
        set_capturable(self.opt_d, False)
        set_capturable(self.opt_g, False)
        if self.cfg.lr_decay:
            self._set_lr()   # the step redone eagerly takes the exact LR, not the tensor's float32 rounding
        warnings.warn(f"CUDA graph capture failed at step {self.step} ({reason}); training goes on with eager "
                      "steps from the same state. Set gan.cuda_graphs=false to skip the attempt.",
                      RuntimeWarning, stacklevel=3)

    def _capturable_steps(self) -> None:
        """With CUDA graphs, every step (the eager warm-up steps too) uses capturable Adam, so a run resumed
        from a checkpoint does the same arithmetic as one that was never interrupted."""
        for opt in (self.opt_d, self.opt_g):
            set_capturable(opt, self.use_graphs and self.cuda, self._tensor_lr)

    @property
    def _tensor_lr(self) -> bool:
        return self.cfg.lr_decay > 0

    def lr_factor(self, step: int) -> float:
        """The learning rates' factor for the update that follows ``step`` steps: 1, and with ``lr_decay`` a
        linear fall over the run's last round(lr_decay * steps) updates, to 1/that at the last one (as in
        pix2pix and CycleGAN, whose LR falls to 0 over the second half). A resumed run gets the same factors."""
        n = round(self.cfg.lr_decay * self.cfg.steps)
        return min(1.0, max(0.0, (self.cfg.steps - step) / n)) if n else 1.0

    def _set_lr(self) -> None:
        f = self.lr_factor(self.step)
        for opt, base in ((self.opt_d, self.cfg.lr_d), (self.opt_g, self.cfg.lr_g)):
            for group in opt.param_groups:
                if torch.is_tensor(group["lr"]):
                    group["lr"].fill_(base * f)   # read by the captured step at its next replay
                else:
                    group["lr"] = base * f

    @property
    def graph_mode(self) -> str:
        """on | off | fallback: what the run's steps actually used."""
        return "fallback" if self.graph_failure else "on" if self.use_graphs else "off"

    @property
    def graph_status(self) -> str:
        """:attr:`graph_mode`, with the reason of a fallback: ``fallback (<reason>)``."""
        return f"fallback ({self.graph_failure})" if self.graph_failure else self.graph_mode

    def _epoch_end(self) -> None:
        self.perm.copy_(torch.randperm(self.n, generator=self.perm_gen, device=self.device))
        self.pos.zero_()

    # ---- the loop ---------------------------------------------------------------------------------------
    def run(self, until: int, callbacks: Callbacks | None = None, checkpoint_every: int = 0) -> None:
        """Train until ``self.step == until``. Raises DivergenceError (no checkpoint after the bad window)."""
        cb = callbacks or Callbacks()
        if self.cfg.lr_decay and until > self.cfg.steps:
            raise ValueError(f"the LR schedule (lr_decay {self.cfg.lr_decay}) ends at step {self.cfg.steps}, "
                             f"not {until}")
        self.G.train(), self.D.train()
        window = _Window(step0=self.step)
        while self.step < until:
            if self.cfg.lr_decay:
                self._set_lr()
            if not (self.use_graphs and self._graph_step()):
                self._train_step()
            self.step += 1
            if self.step % self.steps_per_epoch == 0:
                self._epoch_end()
                if cb.on_epoch:
                    cb.on_epoch(self, self.step, self.step // self.steps_per_epoch)
            ckpt = bool(checkpoint_every) and (self.step % checkpoint_every == 0 or self.step == until)
            if self.step % self.cfg.log_every == 0 or self.step == until or ckpt:
                metrics = self._flush(window)
                if cb.on_log:
                    cb.on_log(self, self.step, metrics)
                if ckpt and cb.on_checkpoint:
                    cb.on_checkpoint(self, self.step)
                window = _Window(step0=self.step)  # callbacks' time is not training time

    def _flush(self, window: _Window) -> dict:
        """Read and reset the on-device sums (the one host sync per window); check for divergence."""
        sums = self.acc.tolist()
        self.acc.zero_()
        if self.world > 1:
            t = torch.tensor(sums, dtype=torch.float64, device=self.device)
            dist.all_reduce(t)
            sums = t.tolist()
        count = max(sums[-1], 1.0)
        seconds = time.perf_counter() - window.t0
        m = {k: v / count for k, v in zip(METRICS, sums)}
        f = self.lr_factor(self.step - 1)   # the last update's
        m["lr_g"], m["lr_d"] = self.cfg.lr_g * f, self.cfg.lr_d * f
        m["images_per_second"] = (self.step - window.step0) * self.cfg.batch / max(seconds, 1e-9)
        m["epoch"] = self.step / self.steps_per_epoch
        self.history.append({"step": self.step, **m})
        if not all(math.isfinite(m[k]) for k in METRICS):
            raise DivergenceError(f"non-finite losses at step {self.step} ({_fmt(m)}); the last checkpoint "
                                  "before this window is kept. Lower gan.lr_d/gan.lr_g, try gan.loss=hinge or "
                                  "gan.spectral_norm=true")
        if self.cfg.collapse_patience and m["d_real"] > 0.99 and m["d_fake"] < 0.01:
            self._collapsed += 1
            if self._collapsed >= self.cfg.collapse_patience:
                raise DivergenceError(
                    f"the discriminator has won for {self._collapsed} windows in a row (D(x) > 0.99, D(G(z)) < "
                    f"0.01 at step {self.step}: {_fmt(m)}); the generator gets no useful gradient. The last "
                    "good checkpoint is kept. Try gan.diffaugment=translation,cutout, a lower gan.lr_d, or "
                    "gan.spectral_norm=true")
        else:
            self._collapsed = 0
        return m

    # ---- sampling and state ----------------------------------------------------------------------------
    def sampler(self, seed: int = 0) -> Generator:
        """A copy of the EMA generator (raw G when EMA is off) with recalibrated BatchNorm, in eval mode."""
        g = copy.deepcopy(self.G_ema if self.G_ema is not None else self.G).float()
        g = g.to(memory_format=torch.contiguous_format)
        probs = torch.bincount(self.labels, minlength=self.gan.num_classes) if self.labels is not None else None
        return recalibrate_bn(g, probs, seed=self.seed + 2 + seed)

    @torch.no_grad()
    def grid_images(self, g: Generator | None = None) -> torch.Tensor:
        """The fixed latent batch through ``g`` (default: ``sampler()``): (grid_size, 1, R, R) on the CPU."""
        g = g or self.sampler()
        y = self.fixed_y.to(self.device) if self.fixed_y is not None else None
        return g(self.fixed_z.to(self.device), y).float().cpu()

    def state_dict(self) -> dict:
        """Everything needed to resume exactly. Collective under torch.distributed (every process's
        random stream is gathered), so every process must call it."""
        own = torch.cuda.get_rng_state(self.device) if self.cuda else self.gen.get_state()
        streams = [own]
        if self.world > 1:
            streams = [None] * self.world
            dist.all_gather_object(streams, own)
        rng = {"perm": self.perm_gen.get_state(), "device": streams}
        return {
            "format": CHECKPOINT_FORMAT, "step": self.step, "seed": self.seed,
            "gan_config": self.gan.to_dict(), "train_config": self.cfg.to_dict(),
            "G": self.G.state_dict(), "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict() if self.G_ema is not None else None,
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "ema_t": self.ema_t.cpu(), "perm": self.perm.cpu(), "pos": self.pos.cpu(), "rng": rng,
            "fixed_z": self.fixed_z, "fixed_y": self.fixed_y,
            "history": self.history, "collapsed": self._collapsed,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint format {state.get('format')} is not {CHECKPOINT_FORMAT}")
        if state["gan_config"] != self.gan.to_dict():
            raise ValueError(f"checkpoint is for {state['gan_config']}, not {self.gan.to_dict()}")
        if self._graph is not None and self._graph.graph is not None:
            raise RuntimeError("load the checkpoint before training: this trainer has already captured its step")
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        if self.G_ema is not None and state["G_ema"] is not None:
            self.G_ema.load_state_dict(state["G_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self._capturable_steps()   # written with or without graphs, resumed under either
        self.step, self._collapsed = int(state["step"]), int(state["collapsed"])
        self.history = list(state["history"])
        self.ema_t.copy_(state["ema_t"])
        self.perm.copy_(state["perm"])
        self.pos.copy_(state["pos"])
        self.perm_gen.set_state(state["rng"]["perm"])
        streams = state["rng"]["device"]
        if len(streams) != self.world:
            raise ValueError(f"checkpoint was written by {len(streams)} processes, this run has {self.world}")
        if self.cuda:
            torch.cuda.set_rng_state(streams[self.rank], self.device)
        else:
            self.gen.set_state(streams[self.rank])
        self.fixed_z, self.fixed_y = state["fixed_z"], state["fixed_y"]


def generator_state(trainer: Trainer, classes: list[str], g: Generator | None = None) -> dict:
    """The generator file's dict (dcgan.models.generator_state) for ``g`` (default ``trainer.sampler()``: EMA
    weights with recalibrated BatchNorm), with the trainer's seed, step and fixed latents."""
    return models.generator_state(g or trainer.sampler(), classes, seed=trainer.seed, step=trainer.step,
                                  ema=trainer.G_ema is not None, fixed_z=trainer.fixed_z, fixed_y=trainer.fixed_y)


def _fmt(m: dict) -> str:
    return ", ".join(f"{k} {m[k]:.4g}" for k in METRICS)
