"""Turn a step's return value into a manifest of plain JSON with artifact references, and back.

A manifest is what travels between the engine and the workers: plain data (dicts with string
keys, lists, strings, numbers, booleans, None) stays inline, and so do values JSON has no type
for (datetimes, sets, dataclasses, ...: ``fanflow.stores.typed``); every other leaf (a NumPy
array, bytes, a file, a torch tensor or state dict, a scikit-learn estimator, a table or a
value with a registered serializer: ``fanflow.stores.serializers``) is written once to the
artifact store and replaced by ``{"$artifact": "sha256:...", "format": ..., ...}``. Consumers
get the leaves back loaded: arrays memory-mapped, files as read-only paths, every one
verified against its digest first (see ``ArtifactStore.path``), so a damaged object fails the
task that reads it instead of handing it wrong data.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from fanflow.stores import serializers, typed
from fanflow.stores.artifacts import ArtifactPath, ArtifactStore
from fanflow.stores.code import reader
from fanflow.stores.serializers import UnstorableValue
from fanflow.vocab.manifest import ARTIFACT_KEY, FLOAT_KEY, RESERVED_PREFIX, VALUE_KEY

# scikit-learn models are loaded with skops, trusting only types from these packages.
_TRUSTED_MODULE_PREFIXES = ("sklearn.", "numpy", "scipy.", "builtins", "collections")


__all__ = ["UnstorableValue", "decode", "encode", "locations"]


def encode(value: Any, store: ArtifactStore, *, where: str = "output", scratch: str | Path | None = None) -> Any:
    """Store the non-JSON leaves of ``value`` and return its manifest; a file under the
    folder ``scratch`` is moved into the store rather than copied."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return {FLOAT_KEY: repr(float(value))}  # float(): NumPy's repr is np.float64(nan)
        return value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise UnstorableValue(f"{where}: dict keys must be strings, got {key!r}")
            if key.startswith(RESERVED_PREFIX):
                raise UnstorableValue(f"{where}: keys starting with '$' are reserved, got {key!r}")
            out[key] = encode(item, store, where=f"{where}.{key}", scratch=scratch)
        if _is_state_dict(value):
            return _put_torch(value, store)
        return out
    if isinstance(value, list | tuple):
        return [encode(v, store, where=f"{where}[{i}]", scratch=scratch) for i, v in enumerate(value)]
    return _encode_leaf(value, store, where, scratch)


def _encode_leaf(value: Any, store: ArtifactStore, where: str, scratch: str | Path | None) -> dict:
    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(value, np.generic):  # a NumPy scalar: as the Python value it holds
            return encode(value.item(), store, where=where, scratch=scratch)
        if isinstance(value, np.ndarray):
            return _put_array(value, store, where)
    if isinstance(value, bytes | bytearray | memoryview):
        obj = store.put_bytes(bytes(value), suffix=".bin")
        return {ARTIFACT_KEY: obj.digest, "format": "bytes", "suffix": ".bin", "size": obj.size}
    if isinstance(value, ArtifactPath) and value.digest and value.is_relative_to(store.root):
        # A stored file handed on by a step: point to it again, no copy, original name kept.
        return {
            ARTIFACT_KEY: value.digest,
            "format": "file",
            "name": value.original_name or value.name,
            "suffix": value.suffix,
            "size": value.stat().st_size,
        }
    if isinstance(value, Path):
        if not value.is_file():
            raise UnstorableValue(f"{where}: {value} is not a file")
        move = scratch is not None and value.resolve().is_relative_to(Path(scratch).resolve())
        suffix = value.suffix if 0 < len(value.suffix) <= 16 else ""
        obj = store.put_file(value, suffix=suffix, move=move and store.local)
        return {
            ARTIFACT_KEY: obj.digest,
            "format": "file",
            "name": value.name,
            "suffix": suffix,
            "size": obj.size,
        }
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return _put_torch(value, store)
    if _is_sklearn_estimator(value):
        return _put_skops(value, store)
    try:
        found = typed.encode(value, lambda item, at: encode(item, store, where=at, scratch=scratch), where)
    except typed.TypedValueError as exc:
        raise UnstorableValue(str(exc)) from None
    return found if found is not None else serializers.store(value, store, where)


def _put_array(array, store: ArtifactStore, where: str) -> dict:
    import numpy as np

    if array.dtype.hasobject:
        raise UnstorableValue(f"{where}: NumPy arrays of Python objects cannot be stored safely")
    with store.writing(".npy") as tmp:  # removed if the disk fills up
        np.save(tmp, np.ascontiguousarray(array), allow_pickle=False)
        # np.save appends .npy only when missing; temp_path ends in ".npy.part".
        written = tmp if tmp.exists() else Path(str(tmp) + ".npy")
        obj = store.put_file(written, suffix=".npy", move=True)
    return {
        ARTIFACT_KEY: obj.digest,
        "format": "npy",
        "suffix": ".npy",
        "size": obj.size,
        "shape": list(array.shape),
        "dtype": array.dtype.str,
    }


def _is_state_dict(value: dict) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def _put_torch(value, store: ArtifactStore) -> dict:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(value, buffer)
    obj = store.put_bytes(buffer.getvalue(), suffix=".pt")
    return {ARTIFACT_KEY: obj.digest, "format": "torch", "suffix": ".pt", "size": obj.size}


def _is_sklearn_estimator(value: Any) -> bool:
    base = sys.modules.get("sklearn.base")
    return base is not None and isinstance(value, base.BaseEstimator)


def _put_skops(value, store: ArtifactStore) -> dict:
    import skops.io

    obj = store.put_bytes(skops.io.dumps(value), suffix=".skops")
    return {ARTIFACT_KEY: obj.digest, "format": "skops", "suffix": ".skops", "size": obj.size}


def decode(manifest: Any, store: ArtifactStore) -> Any:
    """Load a manifest's artifacts: arrays memory-mapped, files as paths, models verified."""
    if isinstance(manifest, list):
        return [decode(v, store) for v in manifest]
    if isinstance(manifest, dict):
        if ARTIFACT_KEY in manifest:
            return _load_leaf(manifest, store)
        if VALUE_KEY in manifest:
            try:
                return typed.decode(manifest, lambda item: decode(item, store), reader(store))
            except typed.TypedValueError as exc:
                raise UnstorableValue(str(exc)) from None
        if FLOAT_KEY in manifest and len(manifest) == 1:
            return float(manifest[FLOAT_KEY])
        return {k: decode(v, store) for k, v in manifest.items()}
    return manifest


def _load_leaf(ref: dict, store: ArtifactStore) -> Any:
    digest, fmt, suffix = ref[ARTIFACT_KEY], ref.get("format"), ref.get("suffix", "")
    if fmt == "npy":
        import numpy as np

        return np.load(store.path(digest, suffix), mmap_mode="r", allow_pickle=False)
    if fmt == "file":
        path = store.path(digest, suffix)
        path.original_name = ref.get("name")
        return path
    if fmt == "bytes":
        return store.read_bytes(digest, suffix)
    if fmt == "torch":
        import io

        import torch

        data = store.read_bytes(digest, suffix, verify=True)
        return torch.load(io.BytesIO(data), weights_only=True)
    if fmt == "skops":
        import skops.io

        data = store.read_bytes(digest, suffix, verify=True)
        untrusted = skops.io.get_untrusted_types(data=data)
        unsafe = [t for t in untrusted if not t.startswith(_TRUSTED_MODULE_PREFIXES)]
        if unsafe:
            raise UnstorableValue(f"artifact {digest} holds types that are not trusted: {unsafe}")
        return skops.io.loads(data, trusted=untrusted)
    return serializers.load(ref, store)


def locations(manifest: Any, store: ArtifactStore) -> Any:
    """The manifest with each artifact reference replaced by where its object lives."""
    if isinstance(manifest, dict):
        if ARTIFACT_KEY in manifest:
            return store.location(manifest[ARTIFACT_KEY], manifest.get("suffix", ""))
        return {k: locations(v, store) for k, v in manifest.items()}
    if isinstance(manifest, list):
        return [locations(v, store) for v in manifest]
    return manifest
