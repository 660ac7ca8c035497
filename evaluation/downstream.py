"""Downstream classifiers that answer "do synthetic images help?": a compact MONAI CNN and XGBoost on image
features. Both follow scikit-learn's contract (``__init__`` stores arguments, ``fit`` returns self, learned
attributes end in ``_``) and choose everything they choose (CNN epoch, XGBoost rounds, decision threshold)
on the validation arrays given to ``fit``; the test split reaches them only through ``predict_proba``.

The CNN keeps its data on its device (sent once), draws its batches there and, with ``precision="bf16"``,
runs under the same autocast as the GAN (common/precision.py); on a CPU its draws are those of a host loop.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from common.precision import autocast
from evaluation.metrics import youden_threshold


def _check(X, y=None):
    X = np.asarray(X)
    if X.ndim != 4 or X.shape[1] != 1:
        raise ValueError(f"expected (N,1,H,W) images in [-1,1], got {X.shape}")
    if y is not None and (np.asarray(y).shape != (len(X),)):
        raise ValueError(f"expected {len(X)} labels, got {np.asarray(y).shape}")
    return X


def _check_fit(X, y, X_val, y_val):
    """Training and validation arrays, once validation holds both classes: the epoch or number of trees and
    the threshold are chosen there by ROC AUC and Youden's J, which one class leaves undefined."""
    if len(np.unique(np.asarray(y_val))) < 2:
        raise ValueError(f"the validation split holds one class only ({len(X_val)} images): ROC AUC and the "
                         "threshold cannot be chosen on it; it needs images of both classes")
    return _check(X, y), _check(X_val, y_val)


def classic_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The baseline a GAN must beat, drawn per image from ``generator`` on the images' device: a horizontal flip,
    a rotation up to 10 degrees (bilinear, corners black like the letterbox bars), intensity scaled by up to
    +-10% and shifted by up to +-0.1, each with probability 0.5; (N,1,H,W) in [-1,1] -> the same, clamped.

    Written in torch on the whole batch rather than with MONAI's array transforms, which go image by image in
    Python: on 2 CPU cores those took 0.17 s per batch of 64 at 64 px, longer than the training step itself."""
    n, device = len(x), x.device

    def uniform(p: float, amplitude: float) -> torch.Tensor:   # U(-a, a) with probability p, else 0
        u = torch.rand(n, generator=generator, device=device) * 2 - 1
        on = torch.rand(n, generator=generator, device=device) < p
        return u * amplitude * on

    flip = torch.rand(n, generator=generator, device=device) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    angle = uniform(0.5, float(np.deg2rad(10)))
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1
    scale, shift = 1 + uniform(0.5, 0.1), uniform(0.5, 0.1)
    return (x * scale[:, None, None, None] + shift[:, None, None, None]).clamp(-1, 1)


def _net(arch: str, width: int):
    from monai.networks.nets import DenseNet, ResNet

    if arch == "resnet10":   # MONAI's ResNet, 2-D, one input channel, basic blocks [1, 1, 1, 1]
        return ResNet("basic", [1, 1, 1, 1], [width, 2 * width, 4 * width, 8 * width], spatial_dims=2,
                      n_input_channels=1, num_classes=2, conv1_t_size=3, conv1_t_stride=1)
    if arch == "resnet18":
        return ResNet("basic", [2, 2, 2, 2], [width, 2 * width, 4 * width, 8 * width], spatial_dims=2,
                      n_input_channels=1, num_classes=2, conv1_t_size=3, conv1_t_stride=1)
    if arch == "densenet":   # a compact DenseNet
        return DenseNet(spatial_dims=2, in_channels=1, out_channels=2, init_features=width, growth_rate=width // 2,
                        block_config=(2, 4, 6, 4))
    raise ValueError(f"unknown CNN architecture {arch!r}; choose resnet10, resnet18 or densenet")


def channels_last_is_safe(net: torch.nn.Module, device: torch.device) -> bool:
    """Whether ``net`` may train in channels_last on ``device``. Not on a CPU when it has a strided 1x1
    convolution with fewer than 16 input channels: oneDNN's AVX2 kernel for that convolution's weight gradient
    writes past its workspace in NHWC when the input channels are fewer than its block (uxlfoundation/oneDNN
    issue 6035; heap corruption, "double free or corruption", on AVX2-only CPUs, e.g. a ResNet of width 4).
    16, not AVX2's block of 8, leaves room for AVX-512's block of 16."""
    return device.type != "cpu" or not any(
        isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) and m.stride != (1, 1) and m.in_channels < 16
        for m in net.modules())


class CNNClassifier:
    def __init__(self, arch: str = "resnet10", width: int = 32, epochs: int = 20, batch: int = 64, lr: float = 1e-3,
                 weight_decay: float = 1e-4, augment: bool = False, device: str = "cpu", random_state: int = 0,
                 precision: str = "fp32", epoch_size: int | None = None):
        self.arch, self.width, self.epochs, self.batch, self.lr = arch, width, epochs, batch, lr
        self.weight_decay, self.augment, self.device, self.random_state = weight_decay, augment, device, random_state
        self.precision, self.epoch_size = precision, epoch_size

    def _epoch(self, n: int, gen: torch.Generator, device: torch.device) -> tuple[torch.Tensor, ...]:
        """One epoch's batches of indices: ``epoch_size`` images (default n) drawn without replacement, in as
        many shuffles as needed. With the real training count as epoch_size, a set with synthetic images added
        gets more variety but no more optimiser steps than real only."""
        size = self.epoch_size or n
        order = torch.cat([torch.randperm(n, generator=gen, device=device) for _ in range(-(-size // n))])
        return order[:size].split(self.batch)

    def fit(self, X, y, X_val, y_val, on_epoch=None) -> "CNNClassifier":
        """Train on (X, y); keep the epoch with the best validation ROC AUC and the Youden threshold there."""
        from evaluation.metrics import classification_metrics

        X, Xv = _check_fit(X, y, X_val, y_val)
        device = torch.device(self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)
            net = _net(self.arch, self.width).to(device)
        if channels_last_is_safe(net, device):   # 1.3-1.5x the images/s on 2 CPU cores (bench/cnn_throughput.py)
            net = net.to(memory_format=torch.channels_last)
        gen = torch.Generator(device).manual_seed(self.random_state)   # batches and augmentations drawn on the device
        amp = autocast(device, self.precision)
        x_all = torch.as_tensor(X, dtype=torch.float32).to(device)       # sent once
        y_all = torch.as_tensor(np.asarray(y), dtype=torch.long).to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        steps = self.epochs * -(-(self.epoch_size or len(X)) // self.batch)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=steps)
        # class-balanced loss: the classes are unbalanced (Kermany 1:3)
        counts = torch.bincount(y_all, minlength=2).float().clamp(min=1)
        weight = counts.sum() / (2 * counts)
        best, self.history_ = (-1.0, None, 0), []
        for epoch in range(1, self.epochs + 1):
            net.train()
            for idx in self._epoch(len(X), gen, device):
                xb = x_all[idx]
                if self.augment:
                    xb = classic_augment(xb, gen)
                with amp:
                    logits = net(xb)
                loss = F.cross_entropy(logits.float(), y_all[idx], weight=weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            self.model_ = net
            val = self.predict_proba(Xv)[:, 1]
            auc = classification_metrics(np.asarray(y_val), val)["roc_auc"]
            auc = -1.0 if auc is None else auc
            self.history_.append({"epoch": epoch, "val_roc_auc": auc})
            if on_epoch:
                on_epoch(epoch, auc)
            if auc > best[0]:
                best = (auc, copy.deepcopy(net.state_dict()), epoch)
        net.load_state_dict(best[1])
        self.model_, self.best_epoch_, self.val_roc_auc_ = net.eval(), best[2], best[0]
        self.threshold_ = youden_threshold(np.asarray(y_val), self.predict_proba(Xv)[:, 1])
        return self

    @torch.no_grad()
    def predict_proba(self, X) -> np.ndarray:
        X = _check(X)
        self.model_.eval()
        device = next(self.model_.parameters()).device
        x = torch.as_tensor(X, dtype=torch.float32).to(device)   # sent once; probabilities come back once
        with autocast(device, self.precision):
            out = [torch.softmax(self.model_(x[i:i + 512]).float(), 1) for i in range(0, len(x), 512)]
        return torch.cat(out).cpu().numpy()


def pixel_features(X, size: int = 16) -> np.ndarray:
    """Images -> flattened area-averaged size x size pixels."""
    X = torch.as_tensor(_check(X), dtype=torch.float32)
    return F.adaptive_avg_pool2d(X, size).flatten(1).numpy()


class XGBoostClassifier:
    """XGBoost on image features (the DCGAN + XGBoost recipe): ``feature_fn`` maps (N,1,H,W) images to
    (N, D) features (flattened pixels, the domain extractor's features, or both joined)."""

    def __init__(self, feature_fn=pixel_features, n_estimators: int = 400, max_depth: int = 4,
                 learning_rate: float = 0.05, early_stopping_rounds: int = 30, augment_copies: int = 0,
                 random_state: int = 0, n_jobs: int = 0):
        self.feature_fn, self.n_estimators, self.max_depth = feature_fn, n_estimators, max_depth
        self.learning_rate, self.early_stopping_rounds = learning_rate, early_stopping_rounds
        self.augment_copies, self.random_state, self.n_jobs = augment_copies, random_state, n_jobs

    def fit(self, X, y, X_val, y_val) -> "XGBoostClassifier":
        from xgboost import XGBClassifier

        (X, Xv), y = _check_fit(X, y, X_val, y_val), np.asarray(y)
        if self.augment_copies:  # XGBoost cannot augment on the fly: add augmented copies
            gen = torch.Generator().manual_seed(self.random_state)
            extra = [classic_augment(torch.as_tensor(X, dtype=torch.float32), gen).numpy()
                     for _ in range(self.augment_copies)]
            X, y = np.concatenate([X, *extra]), np.concatenate([y] * (1 + self.augment_copies))
        pos = max(1, int((y == 1).sum()))
        self.model_ = XGBClassifier(n_estimators=self.n_estimators, max_depth=self.max_depth,
                                    learning_rate=self.learning_rate, early_stopping_rounds=self.early_stopping_rounds,
                                    eval_metric="auc", random_state=self.random_state, n_jobs=self.n_jobs or None,
                                    scale_pos_weight=(len(y) - pos) / pos, tree_method="hist")
        self.model_.fit(self.feature_fn(X), y, eval_set=[(self.feature_fn(Xv), np.asarray(y_val))], verbose=False)
        self.best_iteration_ = int(self.model_.best_iteration)
        self.threshold_ = youden_threshold(np.asarray(y_val), self.predict_proba(Xv)[:, 1])
        return self

    def predict_proba(self, X) -> np.ndarray:
        return self.model_.predict_proba(self.feature_fn(_check(X)))
