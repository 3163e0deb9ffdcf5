"""Shipped code in the artifact store: the source of steps that workers cannot import by name
(defined in a notebook cell or a ``__main__`` script), stored content-addressed as ``.py``
objects and read back only when their bytes match the digest that names them."""

from __future__ import annotations

from fanflow.stores.artifacts import ArtifactStore

SUFFIX = ".py"


def put_code(store: ArtifactStore, source: str) -> str:
    """Store ``source``; returns its digest (``sha256:<hex>``)."""
    return store.put_bytes(source.encode("utf-8"), suffix=SUFFIX).digest


def read_code(store: ArtifactStore, digest: str) -> str:
    """The source stored under ``digest``, checked against it."""
    return store.read_bytes(digest, SUFFIX, verify=True).decode("utf-8")


def reader(store: ArtifactStore):
    """``read_shipped`` for ``fanflow.vocab.imports.import_object``."""
    return lambda digest: read_code(store, digest)
