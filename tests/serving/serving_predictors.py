"""A small real predictor for the serving tests: it tags a clip by where it is bright.

The frame is cut into a grid of regions, one tag per region; a region's score is its mean
brightness over the whole clip times ``gain`` (clipped to 1). It keeps the fitted-predictor
contract (``predict_proba``, ``tags_``, ``input_shape_``, ``threshold_``) and is saved as
JSON, a format that holds no code.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np


class BrightnessTagger:
    def __init__(self, input_shape=(4, 8, 8), grid=(2, 2), threshold=0.5, gain=1.0, delay=0.0, tags=None):
        self.input_shape_ = tuple(input_shape)
        self.grid = tuple(grid)
        self.threshold_ = float(threshold)
        self.gain = float(gain)
        self.delay = float(delay)  # seconds each call takes at least: a slow model
        rows, cols = self.grid
        self.tags_ = list(tags) if tags else [f"r{i}c{j}" for i in range(rows) for j in range(cols)]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.delay:
            time.sleep(self.delay)
        n, t, h, w = X.shape
        rows, cols = self.grid
        regions = X.reshape(n, t, rows, h // rows, cols, w // cols).mean(axis=(1, 3, 5))
        return np.clip(regions.reshape(n, rows * cols) * self.gain, 0.0, 1.0).astype(np.float32)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        fields = {
            "input_shape": list(self.input_shape_),
            "grid": list(self.grid),
            "threshold": self.threshold_,
            "gain": self.gain,
            "delay": self.delay,
            "tags": self.tags_,
        }
        path.write_text(json.dumps(fields))
        return path


def load_tagger(path: str | Path) -> BrightnessTagger:
    """The loader the tests give the model server in place of fanflow.ml.models:load_model.
    A ``load_seconds`` field makes loading take that long (a big model)."""
    fields = json.loads(Path(path).read_text())
    time.sleep(fields.pop("load_seconds", 0))
    return BrightnessTagger(**fields)


def clips_with(brightness: dict[str, float], n: int = 1, shape=(4, 8, 8), grid=(2, 2)) -> np.ndarray:
    """n clips whose regions have the given brightness (``{"r0c1": 0.6}``; others 0)."""
    h, w = shape[1:]
    rows, cols = grid
    clip = np.zeros(shape, dtype=np.float32)
    for tag, value in brightness.items():
        i, j = int(tag[1]), int(tag[3])
        clip[:, i * h // rows : (i + 1) * h // rows, j * w // cols : (j + 1) * w // cols] = value
    return np.repeat(clip[None], n, axis=0)
