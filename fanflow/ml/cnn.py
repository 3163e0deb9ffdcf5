"""Convolutional networks on clips, in PyTorch, behind the scikit-learn estimator contract.

Each frame goes through the same small 2D CNN; its feature maps are max-pooled over space
and then over time, so a digit counts wherever and whenever it shows, and a linear head with
one sigmoid per entity says which entities the clip holds. Options change what a network
sees (``frames``: all, even or odd frames; ``motion``: the difference to the previous frame
as a second channel) and how it sees it (``channels``, ``kernel``, ``dilation``), so that
members of the zoo make different mistakes.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from fanflow.ml.budget import EarlyStopping, Progress, check_budget, plan
from fanflow.ml.errors import ParameterError
from fanflow.ml.estimator import ClipTagger
from fanflow.ml.metrics import jaccard, log_loss
from fanflow.ml.video import to_unit

FRAME_VIEWS = ("all", "even", "odd")


def _torch():
    import torch

    return torch


def build_net(n_tags: int, channels, kernel: int, dilation: int, dropout: float, batchnorm: bool,
              in_channels: int):
    torch = _torch()
    nn = torch.nn

    class FrameNet(nn.Module):
        def __init__(self):
            super().__init__()
            layers: list = []
            c_in = in_channels
            for i, c_out in enumerate(channels):
                layers.append(nn.Conv2d(c_in, c_out, kernel, padding=dilation * (kernel // 2),
                                        dilation=dilation, bias=not batchnorm))
                if batchnorm:
                    layers.append(nn.BatchNorm2d(c_out))
                layers.append(nn.ReLU(inplace=True))
                if dropout:
                    layers.append(nn.Dropout2d(dropout))
                if i < len(channels) - 1:
                    layers.append(nn.MaxPool2d(2))
                c_in = c_out
            self.features = nn.Sequential(*layers)
            self.head_dropout = nn.Dropout(2 * dropout) if dropout else nn.Identity()
            self.head = nn.Linear(c_in, n_tags)
            # Input standardisation, learnt from the training clips and saved with the weights.
            self.register_buffer("mean", torch.zeros(()))
            self.register_buffer("std", torch.ones(()))

        def forward(self, x):  # x: (B, T, C, H, W) in [0, 1]
            b, t = x.shape[:2]
            z = (x.flatten(0, 1) - self.mean) / self.std
            f = self.features(z).amax(dim=(2, 3))  # (B*T, C): strongest response anywhere
            f = f.view(b, t, -1).amax(dim=1)  # and at any time
            return self.head(self.head_dropout(f))

    return FrameNet()


class ClipCNN(ClipTagger):
    """Frame-wise CNN pooled over time with a multi-label sigmoid head.

    Trained with AdamW and a one-cycle learning rate on ``train_frames`` random frames of
    each clip (all frames at prediction), the head's bias starting at each entity's prior
    log-odds, for a budget of optimiser steps scaled to the data (``budget``). After every
    epoch the validation loss is measured; training stops once it has not improved for
    ``patience`` epochs (never during the warm-up or the ``min_epochs`` after it, by default
    a quarter of the budget), keeping the best epoch. ``channels`` None picks the widths from the clip size: 16-32-64, with
    one more block of 64 per doubling of the side beyond 32 pixels.
    """

    family = "torch-cnn"

    def __init__(
        self,
        channels: tuple[int, ...] | None = None,
        kernel: int = 3,
        dilation: int = 1,
        dropout: float = 0.0,
        batchnorm: bool = False,
        frames: str = "all",
        motion: bool = False,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 32,
        epochs: int = 8,
        min_steps: int = 1500,
        max_steps: int = 6000,
        warmup: float = 0.25,
        patience: int = 3,
        min_epochs: int | None = None,
        train_frames: int = 4,
        threshold: float | None = None,
        entity_thresholds: bool = False,
        validation_fraction: float = 0.15,
        seed: int = 0,
        device: str = "auto",
        verbose: int = 0,
    ):
        self.channels = channels
        self.kernel = kernel
        self.dilation = dilation
        self.dropout = dropout
        self.batchnorm = batchnorm
        self.frames = frames
        self.motion = motion
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.min_steps = min_steps
        self.max_steps = max_steps
        self.warmup = warmup
        self.patience = patience
        self.min_epochs = min_epochs
        self.train_frames = train_frames
        self.threshold = threshold
        self.entity_thresholds = entity_thresholds
        self.validation_fraction = validation_fraction
        self.seed = seed
        self.device = device
        self.verbose = verbose

    # ------------------------------------------------------------------ checks and plumbing

    def _check_params(self) -> None:
        if self.frames not in FRAME_VIEWS:
            raise ParameterError(f"frames: expected one of {FRAME_VIEWS}, got {self.frames!r}")
        if self.channels is not None and (not self.channels or any(int(c) < 1 for c in self.channels)):
            raise ParameterError(f"channels: expected a list of positive widths or None, got {self.channels!r}")
        if self.kernel not in (1, 3, 5, 7):
            raise ParameterError(f"kernel: expected 1, 3, 5 or 7, got {self.kernel!r}")
        if int(self.dilation) < 1:
            raise ParameterError(f"dilation: expected an integer >= 1, got {self.dilation!r}")
        if not 0.0 <= self.dropout < 0.5:
            raise ParameterError(f"dropout: expected a rate in [0, 0.5), got {self.dropout!r}")
        for name in ("batch_size", "train_frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(f"{name}: expected an integer >= 1, got {value!r}")
        check_budget(self.epochs, self.min_steps, self.max_steps, self.patience, self.min_epochs)
        if not 0.0 <= self.warmup < 1.0:
            raise ParameterError(f"warmup: expected a fraction of the budget in [0, 1), got {self.warmup!r}")
        if not self.lr > 0:
            raise ParameterError(f"lr: expected a positive learning rate, got {self.lr!r}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ParameterError(f"device: expected auto, cpu or cuda, got {self.device!r}")

    def _resolve_device(self):
        torch = _torch()
        if self.device == "auto":
            from fanflow.runtime import gpus

            return torch.device("cuda" if gpus() > 0 and torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def _view(self, T: int) -> np.ndarray:
        start = {"all": 0, "even": 0, "odd": 1}[self.frames]
        step = 1 if self.frames == "all" else 2
        picked = np.arange(start, T, step)
        if len(picked) == 0:
            raise ParameterError(f"frames={self.frames!r} leaves no frame of a {T}-frame clip")
        return picked

    def _tensor(self, X: np.ndarray, device):
        """Clips (B, T', H, W) already restricted to the view -> (B, T', C, H, W) floats."""
        torch = _torch()
        x = torch.from_numpy(to_unit(X)).to(device)
        if not self.motion:
            return x.unsqueeze(2)
        diff = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], dim=1)
        return torch.stack([x, diff], dim=2)

    def _widths(self) -> list[int]:
        if self.channels is not None:
            return [int(c) for c in self.channels]
        side = min(self.input_shape_[1:])
        extra = max(0, round(math.log2(side / 32))) if side > 32 else 0
        return [16, 32, 64] + [64] * extra

    def _new_net(self, n_tags: int):
        return build_net(n_tags, self._widths(), int(self.kernel), int(self.dilation),
                         float(self.dropout), bool(self.batchnorm), 2 if self.motion else 1)

    # ------------------------------------------------------------------ fit / predict

    def _fit_model(self, X, y, X_val, y_val) -> None:
        torch = _torch()
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        device = self._resolve_device()
        self.device_ = str(device)
        view = self._view(X.shape[1])
        X = np.ascontiguousarray(X[:, view])  # one read of the (memory-mapped) clips
        n, k = y.shape

        net = self._new_net(k).to(device, memory_format=torch.channels_last)
        sample = to_unit(X[rng.choice(n, size=min(n, 512), replace=False)])
        net.mean.fill_(float(sample.mean()))
        net.std.fill_(float(sample.std()) or 1.0)
        prior = np.clip(y.mean(axis=0), 0.01, 0.99)
        with torch.no_grad():
            net.head.bias.copy_(torch.from_numpy(np.log(prior / (1 - prior))).float())

        budget = plan(n, self.batch_size, self.epochs, self.min_steps, self.max_steps, self.warmup, self.min_epochs)
        self.budget_ = budget
        optimiser = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        schedule = None
        if budget.steps >= 4:  # fewer steps are too few for a warm-up and a decay: a constant rate
            schedule = torch.optim.lr_scheduler.OneCycleLR(
                optimiser, max_lr=self.lr, total_steps=budget.steps,
                pct_start=min(0.5, max(self.warmup, 2.0 / budget.steps)))
        loss_fn = torch.nn.BCEWithLogitsLoss()
        y_t = torch.from_numpy(y).to(device)
        per_step = min(self.train_frames, X.shape[1])
        stopper = EarlyStopping(self.patience, budget.earliest_stop)
        progress = Progress(type(self).__name__, budget.epochs, budget.describe(), enabled=bool(self.verbose))

        self.net_ = net
        self.history_ = []
        best_state = None
        for epoch in range(1, budget.epochs + 1):
            net.train()
            total = 0.0
            order = rng.permutation(n)
            for s in range(budget.steps_per_epoch):
                idx = np.sort(order[s * self.batch_size : (s + 1) * self.batch_size])
                if len(idx) == 0:
                    continue
                # each clip shows the network a different random subset of its frames
                pick = np.sort(rng.random((len(idx), X.shape[1])).argsort(axis=1)[:, :per_step], axis=1)
                xb = self._tensor(X[idx[:, None], pick], device)
                loss = loss_fn(net(xb), y_t[torch.from_numpy(idx).to(device)])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                if schedule is not None:
                    schedule.step()
                total += loss.item() * len(idx)
            val_proba = self._raw_proba(X_val)
            val_loss = log_loss(y_val, val_proba)
            val_score = self._jaccard_at_half(y_val, val_proba)
            improved, stop = stopper.update(epoch, val_loss)
            self.history_.append({"epoch": epoch, "train_loss": total / n, "val_loss": val_loss,
                                  "val_jaccard_at_half": val_score})
            if improved:
                best_state = copy.deepcopy(net.state_dict())
            progress.round(epoch, val_loss, improved, train_loss=total / n, val_score=val_score)
            if stop:
                progress.stopped(epoch, stopper.best_epoch)
                break
        net.load_state_dict(best_state)
        net.eval()
        self.best_round_ = stopper.best_epoch
        self.n_rounds_ = len(self.history_)

    @staticmethod
    def _jaccard_at_half(y_val, proba) -> float:
        return jaccard(y_val, proba >= 0.5)

    def _raw_proba(self, X, batch_size: int = 128) -> np.ndarray:
        torch = _torch()
        view = self._view(X.shape[1])
        net = self.net_
        device = next(net.parameters()).device
        was_training = net.training
        net.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(X), batch_size):
                xb = self._tensor(np.ascontiguousarray(X[start : start + batch_size][:, view]), device)
                out.append(torch.sigmoid(net(xb)).cpu().numpy())
        net.train(was_training)
        return np.concatenate(out) if out else np.zeros((0, len(self.tags_)), dtype=np.float32)

    # ------------------------------------------------------------------ persistence

    def state_tensors(self) -> dict:
        return {k: v.detach().cpu() for k, v in self.net_.state_dict().items()}

    def load_state_tensors(self, state: dict) -> None:
        net = self._new_net(len(self.tags_))
        net.load_state_dict(state)
        net.eval()
        # channels-last runs the small convolutions and poolings about a third faster on CPU
        self.net_ = net.to(self._resolve_device(), memory_format=_torch().channels_last)
