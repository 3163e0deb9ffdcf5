"""The content-addressed artifact store and the values that travel between steps."""

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from fanflow.stores.artifacts import ArtifactStore, IntegrityError
from fanflow.stores.values import UnstorableValue, decode, encode
from fanflow.vocab.manifest import ARTIFACT_KEY


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path):
    if request.param == "local":
        return ArtifactStore(tmp_path / "artifacts")
    return ArtifactStore(f"memory://fanflow-test-{tmp_path.name}", cache_dir=tmp_path / "cache")


def test_objects_are_named_by_their_content(store):
    a = store.put_bytes(b"hello", suffix=".txt")
    b = store.put_bytes(b"hello", suffix=".txt")
    assert a == b and a.digest == "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert store.read_bytes(a.digest, ".txt") == b"hello"


def test_a_tampered_object_fails_verification(tmp_path):
    store = ArtifactStore(tmp_path / "a")
    obj = store.put_bytes(b"weights", suffix=".pt")
    path = store.path(obj.digest, ".pt")
    assert path.stat().st_mode & 0o777 == 0o444  # stored objects are read-only
    path.chmod(0o644)
    path.write_bytes(b"evil")
    with pytest.raises(IntegrityError, match="is damaged"):
        store.read_bytes(obj.digest, ".pt")
    assert not path.exists() and len(list((tmp_path / "a" / "quarantine").iterdir())) == 1
    with pytest.raises(KeyError, match="is not in the store"):
        store.path(obj.digest, ".pt")


def test_values_round_trip_with_arrays_memory_mapped(store, tmp_path):
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    source = tmp_path / "clip.gif"
    source.write_bytes(b"GIF89a...")
    value = {"x": array, "meta": {"n": 3, "ratio": 0.5, "tags": ["a", "b"], "none": None, "inf": float("inf")},
             "raw": b"\x00\x01", "file": source, "tuple": (1, 2), "scalar": np.int64(7)}
    manifest = encode(value, store)
    assert manifest["x"]["format"] == "npy" and manifest["x"]["shape"] == [3, 4]
    assert manifest["scalar"] == 7 and manifest["tuple"] == [1, 2]
    back = decode(manifest, store)
    assert isinstance(back["x"], np.memmap) and not back["x"].flags.writeable
    np.testing.assert_array_equal(back["x"], array)
    assert back["raw"] == b"\x00\x01" and back["meta"]["inf"] == float("inf")
    assert back["file"].read_bytes() == b"GIF89a..." and back["file"].suffix == ".gif"
    assert back["file"].verify() == back["file"]


def test_torch_state_dicts_and_sklearn_models_are_stored_safely(store):
    model = torch.nn.Linear(3, 2)
    fitted = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), [0, 0, 1, 1])
    manifest = encode({"weights": model.state_dict(), "clf": fitted}, store)
    assert manifest["weights"]["format"] == "torch" and manifest["clf"]["format"] == "skops"
    back = decode(manifest, store)
    torch.testing.assert_close(back["weights"]["weight"], model.state_dict()["weight"])
    assert back["clf"].predict([[3.0]]).tolist() == [1]


def test_a_torch_artifact_holding_code_is_not_loaded(tmp_path):
    class Sneaky:
        def __reduce__(self):
            return (Path("/tmp/fanflow-pwned").touch, ())

    store = ArtifactStore(tmp_path / "a")
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(1), "x": Sneaky()}, buffer)
    obj = store.put_bytes(buffer.getvalue(), suffix=".pt")
    with pytest.raises(Exception, match=r"Weights only load failed|weights_only"):
        decode({"$artifact": obj.digest, "format": "torch", "suffix": ".pt"}, store)
    assert not Path("/tmp/fanflow-pwned").exists()


@pytest.mark.parametrize("value,message", [
    (object(), "cannot store a builtins.object"),
    ({1: "a"}, "dict keys must be strings"),
    ({"$artifact": 1}, "keys starting with '$' are reserved"),
    (np.array([object()]), "arrays of Python objects"),
])
def test_unstorable_values_are_refused_with_where_they_were(store, value, message):
    with pytest.raises(UnstorableValue, match=re.escape(message)):
        encode({"out": value}, store)


def test_a_stored_file_handed_on_keeps_its_name_and_is_not_copied(tmp_path):
    store = ArtifactStore(tmp_path / "a")
    source = tmp_path / "model.pt"
    source.write_bytes(b"weights")
    first = encode({"model": source}, store)
    passed_on = encode(decode(first, store), store)
    assert passed_on["model"][ARTIFACT_KEY] == first["model"][ARTIFACT_KEY]
    assert passed_on["model"]["name"] == "model.pt"
    assert len(list(store.iter_objects())) == 1
