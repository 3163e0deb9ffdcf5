"""Serializers: how values of other types become artifacts, and come back, without pickle.

Built in: pandas DataFrames and Arrow tables, as Parquet (through pyarrow; a DataFrame's
index and dtypes are kept in the file's pandas metadata). Anything else can be registered::

    import fanflow

    def load_graph(data: bytes) -> nx.Graph:          # a module-level function:
        return nx.node_link_graph(json.loads(data))   # the manifest names it

    fanflow.register_serializer(
        nx.Graph, dump=lambda g: json.dumps(nx.node_link_data(g)).encode(), load=load_graph,
        suffix=".json",
    )

Register it in the module that defines the steps, so that every worker that imports them has
it. A serializer applies to its class and to subclasses; the one registered last wins. The
manifest records ``load`` as ``module:function``, so a step that only reads the value needs
nothing registered: the function is imported by name when the value is loaded.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fanflow.stores.artifacts import ArtifactStore
from fanflow.vocab.imports import ImportFailed, import_object
from fanflow.vocab.manifest import ARTIFACT_KEY

STORABLE = (
    "dicts, lists, tuples, strings, numbers, booleans, None, NumPy arrays, bytes, pathlib.Path "
    "files, torch tensors and state dicts, scikit-learn estimators, pandas DataFrames, Arrow tables, "
    "dataclasses, pydantic models, enums, datetimes, dates, times, timedeltas, Decimals, UUIDs and sets"
)


class UnstorableValue(TypeError):
    """A step returned something fanflow cannot store (or a stored value cannot be loaded)."""


@dataclass(frozen=True)
class Serializer:
    cls: type
    dump: Callable[[Any], bytes]
    load: str  # "module:function", given the bytes
    suffix: str


_registered: list[Serializer] = []


def register_serializer(
    cls: type, *, dump: Callable[[Any], bytes], load: Callable[[bytes], Any], suffix: str = ".bin"
) -> None:
    """Store values of ``cls`` (and its subclasses) as ``dump(value)``, and load them with
    ``load(data)``, a function defined at the top level of a module."""
    if not isinstance(cls, type):
        raise TypeError(f"register_serializer: expected a class, got {cls!r}")
    module, qualname = getattr(load, "__module__", None), getattr(load, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname or "." in qualname:
        raise TypeError(
            f"register_serializer({cls.__qualname__}): load must be a function defined at the top level "
            f"of an importable module (it is recorded by name), got {load!r}"
        )
    if not (suffix.startswith(".") and len(suffix) <= 16 and "/" not in suffix):
        raise ValueError(f"register_serializer: suffix must look like '.json', got {suffix!r}")
    _registered.insert(0, Serializer(cls, dump, f"{module}:{qualname}", suffix))


def store(value: Any, artifacts: ArtifactStore, where: str) -> dict:
    """Store ``value`` through its serializer; UnstorableValue when it has none."""
    table = _table_kind(value)
    if table:
        return _put_parquet(value, table, artifacts)
    for serializer in _registered:
        if isinstance(value, serializer.cls):
            obj = artifacts.put_bytes(serializer.dump(value), suffix=serializer.suffix)
            return {
                ARTIFACT_KEY: obj.digest,
                "format": "serialized",
                "loader": serializer.load,
                "type": f"{type(value).__module__}.{type(value).__qualname__}",
                "suffix": obj.suffix,
                "size": obj.size,
            }
    name = f"{type(value).__module__}.{type(value).__qualname__}"
    raise UnstorableValue(
        f"{where}: cannot store a {name}; a step may return {STORABLE}. To store a "
        f"{type(value).__qualname__}, register a serializer where the step is defined: "
        f"fanflow.register_serializer({type(value).__qualname__}, dump=..., load=...)"
    )


def load(ref: dict, artifacts: ArtifactStore) -> Any:
    """The value a serializer stored."""
    digest, fmt, suffix = ref[ARTIFACT_KEY], ref.get("format"), ref.get("suffix", "")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(artifacts.path(digest, suffix, verify=True), memory_map=True)
        return table.to_pandas() if ref.get("table") == "pandas" else table
    if fmt == "serialized":
        try:
            loader = import_object(ref.get("loader", ""))
        except ImportFailed as exc:
            raise UnstorableValue(f"artifact {digest} ({ref.get('type')}) cannot be loaded: {exc}") from None
        return loader(artifacts.read_bytes(digest, suffix, verify=True))
    raise UnstorableValue(f"artifact {digest} has an unknown format {fmt!r}")


def _table_kind(value: Any) -> str | None:
    pandas, pyarrow = sys.modules.get("pandas"), sys.modules.get("pyarrow")
    if pandas is not None and isinstance(value, pandas.DataFrame):
        return "pandas"
    if pyarrow is not None and isinstance(value, pyarrow.Table):
        return "arrow"
    return None


def _put_parquet(value: Any, kind: str, artifacts: ArtifactStore) -> dict:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UnstorableValue("storing a table as Parquet needs pyarrow: pip install pyarrow") from None
    table = pa.Table.from_pandas(value) if kind == "pandas" else value
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    obj = artifacts.put_bytes(buffer.getvalue(), suffix=".parquet")
    return {
        ARTIFACT_KEY: obj.digest,
        "format": "parquet",
        "table": kind,
        "suffix": ".parquet",
        "size": obj.size,
        "rows": table.num_rows,
        "columns": [str(c) for c in table.column_names],
    }
