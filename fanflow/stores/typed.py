"""Values JSON has no type for, kept inline in a manifest with their kind recorded, and loaded
back as what they were, without pickle:

=========================  ============================================================
value                      manifest
=========================  ============================================================
``datetime``, ``date``,    ``{"$value": "datetime", "data": "2024-05-01T12:00:00+00:00"}``
``time``                   (ISO 8601; a timezone is kept)
``timedelta``              ``{"$value": "timedelta", "data": [days, seconds, microseconds]}``
``Decimal``, ``UUID``      ``{"$value": "decimal", "data": "1.10"}`` (exact text)
``set``, ``frozenset``     ``{"$value": "set", "data": [items, in a stable order]}``
an ``Enum`` member         ``{"$value": "enum", "type": "module:Class", "data": its value}``
a dataclass                ``{"$value": "dataclass", "type": "module:Class", "data": {field: ...}}``
a pydantic model           ``{"$value": "pydantic", "type": "module:Class", "data": {field: ...}}``
=========================  ============================================================

Fields and items are stored by the same rules as any value, so a dataclass may hold NumPy
arrays, DataFrames or other dataclasses. A type is loaded by importing its class by name
(which must be a dataclass, a pydantic model or an Enum) and building it from its fields.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import sys
import uuid
from collections.abc import Callable
from typing import Any

from fanflow.vocab.imports import ImportFailed, import_object
from fanflow.vocab.manifest import VALUE_KEY, dumps

_SCALARS: dict[str, tuple[type, Callable[[Any], Any], Callable[[Any], Any]]] = {
    # kind: (type, to JSON, from JSON); datetime before date, its base class
    "datetime": (datetime.datetime, datetime.datetime.isoformat, datetime.datetime.fromisoformat),
    "date": (datetime.date, datetime.date.isoformat, datetime.date.fromisoformat),
    "time": (datetime.time, datetime.time.isoformat, datetime.time.fromisoformat),
    "timedelta": (
        datetime.timedelta,
        lambda d: [d.days, d.seconds, d.microseconds],
        lambda parts: datetime.timedelta(*parts),
    ),
    "decimal": (decimal.Decimal, str, decimal.Decimal),
    "uuid": (uuid.UUID, str, uuid.UUID),
}


class TypedValueError(TypeError):
    """A typed value that cannot be stored or loaded; the message says why."""


def encode(value: Any, recurse: Callable[[Any, str], Any], where: str) -> dict | None:
    """The manifest of ``value`` if it is one of this module's kinds, else None.
    ``recurse(item, where)`` stores what it holds."""
    for kind, (cls, to_json, _) in _SCALARS.items():
        if isinstance(value, cls):
            return {VALUE_KEY: kind, "data": to_json(value)}
    if isinstance(value, set | frozenset):
        items = [recurse(item, f"{where}{{}}") for item in value]
        kind = "frozenset" if isinstance(value, frozenset) else "set"
        return {VALUE_KEY: kind, "data": sorted(items, key=dumps)}
    if isinstance(value, enum.Enum):
        return {VALUE_KEY: "enum", "type": _type_name(type(value), where), "data": recurse(value.value, where)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: recurse(getattr(value, f.name), f"{where}.{f.name}") for f in dataclasses.fields(value)}
        return {VALUE_KEY: "dataclass", "type": _type_name(type(value), where), "data": fields}
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(value, pydantic.BaseModel):
        fields = {name: recurse(item, f"{where}.{name}") for name, item in value}
        return {VALUE_KEY: "pydantic", "type": _type_name(type(value), where), "data": fields}
    return None


def decode(manifest: dict, recurse: Callable[[Any], Any], read_shipped=None) -> Any:
    """The value a typed manifest stands for; ``recurse`` loads what it holds."""
    kind, data = manifest[VALUE_KEY], manifest.get("data")
    if kind in _SCALARS:
        return _SCALARS[kind][2](data)
    if kind in ("set", "frozenset"):
        items = [recurse(item) for item in data]
        return set(items) if kind == "set" else frozenset(items)
    if kind in ("enum", "dataclass", "pydantic"):
        cls = _load_type(manifest.get("type", ""), kind, read_shipped)
        if kind == "enum":
            return cls(recurse(data))
        fields = {name: recurse(item) for name, item in data.items()}
        return _dataclass(cls, fields) if kind == "dataclass" else cls.model_validate(fields)
    raise TypedValueError(f"a stored value has an unknown kind {kind!r} (stored by a newer fanflow?)")


def _type_name(cls: type, where: str) -> str:
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        raise TypedValueError(
            f"{where}: cannot store a {cls.__qualname__} defined in __main__ or inside a function: "
            "the step that reads it could not import the class; define it at the top level of a module"
        )
    return f"{cls.__module__}:{cls.__qualname__}"


_CHECKS = {
    "enum": lambda cls: isinstance(cls, type) and issubclass(cls, enum.Enum),
    "dataclass": lambda cls: isinstance(cls, type) and dataclasses.is_dataclass(cls),
    "pydantic": lambda cls: isinstance(cls, type) and hasattr(cls, "model_validate"),
}


def _load_type(target: str, kind: str, read_shipped) -> type:
    try:
        cls = import_object(target, read_shipped=read_shipped)
    except ImportFailed as exc:
        raise TypedValueError(f"cannot load a stored {kind} of type {target}: {exc}") from None
    if not _CHECKS[kind](cls):
        raise TypedValueError(f"cannot load a stored {kind}: {target} is not a {kind} class")
    return cls


def _dataclass(cls: type, fields: dict[str, Any]) -> Any:
    spec = {f.name: f for f in dataclasses.fields(cls)}
    value = cls(**{name: item for name, item in fields.items() if name in spec and spec[name].init})
    for name, item in fields.items():
        if name in spec and not spec[name].init:
            object.__setattr__(value, name, item)
    return value
