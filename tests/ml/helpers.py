"""Shared settings and helpers of the ML tests."""

import numpy as np

# Small enough that a CNN trains in about a second on one core.
TINY_CNN = {"channels": (8, 16), "epochs": 2, "min_steps": 0, "batch_size": 32}
TINY_CLASSIC = {"n_templates": 12}
TINY = {
    "cnn": TINY_CNN,
    "cnn_dropout": TINY_CNN,
    "cnn_batchnorm": TINY_CNN,
    "cnn_wide": TINY_CNN,
    "cnn_motion": TINY_CNN,
    "cnn_wide_motion": TINY_CNN,
    "cnn_even": TINY_CNN,
    "cnn_odd": TINY_CNN,
    "logistic": {**TINY_CLASSIC, "max_rounds": 3},
    "forest": {**TINY_CLASSIC, "trees_per_round": 8, "max_rounds": 3},
}


def as_memmaps(data: dict, folder) -> dict:
    """The arrays of a source's result as read-only memory maps, as the engine hands them on."""
    out = dict(data)
    for split in ("train", "val", "test"):
        out[split] = dict(data[split])
        for key in ("x", "y"):
            path = folder / f"{split}-{key}.npy"
            np.save(path, data[split][key])
            out[split][key] = np.load(path, mmap_mode="r")
    return out
