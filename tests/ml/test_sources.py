import numpy as np
import pytest
from sklearn.datasets import load_digits

from fanflow.ml import DataError, ParameterError
from fanflow.ml.sources import SPLITS, moving_digits, npz_arrays
from fanflow.ml.video import read_clip

SMALL = {"train": 60, "val": 20, "test": 20, "previews": 0}


def test_same_seed_same_arrays_and_another_seed_others():
    a, b = moving_digits(seed=3, **SMALL), moving_digits(seed=3, **SMALL)
    c = moving_digits(seed=4, **SMALL)
    for split in SPLITS:
        for key in ("x", "y", "src"):
            assert np.array_equal(a[split][key], b[split][key])
        assert not np.array_equal(a[split]["x"], c[split]["x"])
    assert a["report"] == b["report"]


def test_shapes_dtypes_and_labels(small_data):
    assert small_data["tags"] == [str(d) for d in range(10)]
    for split, n in (("train", 320), ("val", 80), ("test", 80)):
        x, y = small_data[split]["x"], small_data[split]["y"]
        assert x.shape == (n, 8, 32, 32) and x.dtype == np.uint8
        assert y.shape == (n, 10) and y.dtype == np.uint8
        assert set(np.unique(y.sum(axis=1))) <= {1, 2, 3}
    assert 1.7 < small_data["report"]["entities_per_clip"]["train"] < 2.3


def test_splits_use_disjoint_source_images_and_labels_match_them(small_data):
    target = load_digits().target
    used = {}
    for split in SPLITS:
        src, y = np.asarray(small_data[split]["src"]), small_data[split]["y"]
        used[split] = set(src[src >= 0].tolist())
        for i in range(len(src)):
            ids = src[i][src[i] >= 0]
            assert sorted(target[ids].tolist()) == np.flatnonzero(y[i]).tolist()
    assert not used["train"] & used["val"]
    assert not used["train"] & used["test"]
    assert not used["val"] & used["test"]
    counts = small_data["report"]["source_images"]
    assert sum(counts.values()) == 1797 and counts["train"] > counts["test"] > counts["val"]


def test_a_growing_split_keeps_its_first_clips():
    small = moving_digits(seed=1, train=10, val=5, test=5, previews=0)
    large = moving_digits(seed=1, train=30, val=5, test=7, previews=0)
    assert np.array_equal(small["train"]["x"], large["train"]["x"][:10])
    assert np.array_equal(small["test"]["y"], large["test"]["y"][:5])


def test_previews_are_watchable_videos_of_test_clips():
    data = moving_digits(seed=0, train=10, val=5, test=5, previews=2)
    suffixes = sorted(p.suffix for p in data["previews"])
    assert suffixes == [".gif", ".gif", ".mp4"]
    for path in data["previews"]:
        clip = read_clip(path, frames=8, size=32)
        assert clip.shape == (8, 32, 32)
        # a preview is a lossless (GIF) or near (MP4) copy of the first test clips
        index = int(path.name.split("-")[1])
        assert np.abs(clip - data["test"]["x"][index] / 255).mean() < 0.08


@pytest.mark.parametrize(
    ("params", "field"),
    [({"max_digits": 11}, "max_digits"), ({"size": 6}, "size"), ({"vanish": 1.0}, "vanish"),
     ({"train": 0}, "train"), ({"pools": (0.5, 0.5)}, "pools")],
)
def test_bad_parameters_name_the_field(params, field):
    with pytest.raises(ParameterError, match=field):
        moving_digits(**{**SMALL, **params})


def test_npz_arrays_presplit_and_with_a_split_column(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (12, 4, 16, 16), dtype=np.uint8)
    y = (rng.random((12, 3)) < 0.5).astype(np.uint8)
    split = np.array(["train"] * 8 + ["val"] * 2 + ["test"] * 2)
    np.savez(tmp_path / "a.npz", x=x, y=y, split=split, tags=np.array(["cat", "dog", "owl"]))
    data = npz_arrays(tmp_path / "a.npz")
    assert data["tags"] == ["cat", "dog", "owl"]
    assert np.array_equal(data["val"]["x"], x[8:10]) and np.array_equal(data["test"]["y"], y[10:])

    np.savez(tmp_path / "b.npz", x_train=x[:8] / 255.0, y_train=y[:8], x_val=x[8:10] / 255.0, y_val=y[8:10],
             x_test=x[10:] / 255.0, y_test=y[10:])
    data = npz_arrays(tmp_path / "b.npz")
    assert data["tags"] == ["0", "1", "2"]
    assert np.array_equal(data["train"]["x"], x[:8])  # floats in [0, 1] come back as the same uint8


def test_npz_arrays_errors_name_the_file_and_the_array(tmp_path):
    with pytest.raises(DataError, match=r"missing\.npz: no such file"):
        npz_arrays(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 2, 8, 8)) + 2.0, y=np.zeros((4, 2)))
    with pytest.raises(DataError, match=r"bad.npz: 'x' must be uint8 or floats in \[0, 1\]"):
        npz_arrays(tmp_path / "bad.npz")
    np.savez(tmp_path / "empty.npz", x=np.zeros((4, 0, 8, 8), np.uint8), y=np.zeros((4, 2)))
    with pytest.raises(DataError, match=r"empty\.npz: 'x' holds an empty clip"):
        npz_arrays(tmp_path / "empty.npz")
    np.savez(tmp_path / "keys.npz", clips=np.zeros((4, 2, 8, 8)))
    with pytest.raises(DataError, match=r"keys\.npz: expected arrays x and y"):
        npz_arrays(tmp_path / "keys.npz")
