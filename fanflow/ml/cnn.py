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

from fanflow.ml.errors import ParameterError
from fanflow.ml.estimator import ClipTagger, unit_batch

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
    log-odds; after every epoch the validation clips are scored and training stops once the
    example-based accuracy has not improved for ``patience`` epochs, keeping the best epoch.
    """

    family = "torch-cnn"

    def __init__(
        self,
        channels: tuple[int, ...] = (16, 32, 64),
        kernel: int = 3,
        dilation: int = 1,
        dropout: float = 0.0,
        batchnorm: bool = False,
        frames: str = "all",
        motion: bool = False,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 32,
        max_epochs: int = 8,
        patience: int = 2,
        train_frames: int = 4,
        threshold: float = 0.5,
        seed: int = 0,
        device: str = "auto",
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
        self.max_epochs = max_epochs
        self.patience = patience
        self.train_frames = train_frames
        self.threshold = threshold
        self.seed = seed
        self.device = device

    # ------------------------------------------------------------------ checks and plumbing

    def _check_params(self) -> None:
        if self.frames not in FRAME_VIEWS:
            raise ParameterError(f"frames: expected one of {FRAME_VIEWS}, got {self.frames!r}")
        if not self.channels or any(int(c) < 1 for c in self.channels):
            raise ParameterError(f"channels: expected a list of positive widths, got {self.channels!r}")
        if self.kernel not in (1, 3, 5, 7):
            raise ParameterError(f"kernel: expected 1, 3, 5 or 7, got {self.kernel!r}")
        if int(self.dilation) < 1:
            raise ParameterError(f"dilation: expected an integer >= 1, got {self.dilation!r}")
        if not 0.0 <= self.dropout < 0.5:
            raise ParameterError(f"dropout: expected a rate in [0, 0.5), got {self.dropout!r}")
        for name in ("batch_size", "max_epochs", "patience", "train_frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(f"{name}: expected an integer >= 1, got {value!r}")
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
        x = torch.from_numpy(unit_batch(X)).to(device)
        if not self.motion:
            return x.unsqueeze(2)
        diff = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], dim=1)
        return torch.stack([x, diff], dim=2)

    def _new_net(self, n_tags: int):
        return build_net(n_tags, [int(c) for c in self.channels], int(self.kernel), int(self.dilation),
                         float(self.dropout), bool(self.batchnorm), 2 if self.motion else 1)

    # ------------------------------------------------------------------ fit / predict

    def fit(self, X, y, validation=None, tags=None):
        torch = _torch()
        self._check_params()
        X, y, X_val, y_val = self._check_fit_inputs(X, y, validation, tags)
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        device = self._resolve_device()
        self.device_ = str(device)
        view = self._view(X.shape[1])
        X = np.ascontiguousarray(X[:, view])  # one read of the (memory-mapped) clips
        n, k = y.shape

        net = self._new_net(k).to(device, memory_format=torch.channels_last)
        sample = unit_batch(X[rng.choice(n, size=min(n, 512), replace=False)])
        net.mean.fill_(float(sample.mean()))
        net.std.fill_(float(sample.std()) or 1.0)
        prior = np.clip(y.mean(axis=0), 0.01, 0.99)
        with torch.no_grad():
            net.head.bias.copy_(torch.from_numpy(np.log(prior / (1 - prior))).float())

        steps = math.ceil(n / self.batch_size)
        optimiser = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=self.lr,
                                                       total_steps=steps * self.max_epochs)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        y_t = torch.from_numpy(y).to(device)
        per_step = min(self.train_frames, X.shape[1])

        self.net_ = net
        self.history_ = []
        best_score, best_state, stale = -1.0, None, 0
        for epoch in range(1, self.max_epochs + 1):
            net.train()
            total = 0.0
            order = rng.permutation(n)
            for s in range(steps):
                idx = np.sort(order[s * self.batch_size : (s + 1) * self.batch_size])
                # each clip shows the network a different random subset of its frames
                pick = np.sort(rng.random((len(idx), X.shape[1])).argsort(axis=1)[:, :per_step], axis=1)
                xb = self._tensor(X[idx[:, None], pick], device)
                loss = loss_fn(net(xb), y_t[torch.from_numpy(idx).to(device)])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
                total += loss.item() * len(idx)
            score = self._val_score(y_val, self.predict_proba(X_val), self.threshold_)
            self.history_.append({"epoch": epoch, "train_loss": total / n, "val_jaccard": score})
            if score > best_score:
                best_score, best_state, stale = score, copy.deepcopy(net.state_dict()), 0
                self.best_round_ = epoch
            else:
                stale += 1
                if stale >= self.patience:
                    break
        net.load_state_dict(best_state)
        net.eval()
        self.n_rounds_ = len(self.history_)
        return self

    def predict_proba(self, X, batch_size: int = 128) -> np.ndarray:
        torch = _torch()
        X = self._check_predict_input(X)
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
