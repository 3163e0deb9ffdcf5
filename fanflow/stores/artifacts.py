"""Content-addressed artifact store.

Every object is named by the sha256 of its bytes and written atomically (a temporary file,
then a rename), so a crash never leaves a half-written object under a final name. The store
is a local folder by default; any fsspec URL (``s3://bucket/prefix``, ``gs://...``,
``memory://...``) works too, with objects fetched into a local cache on first read so that
arrays can still be memory-mapped.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

DIGEST_PREFIX = "sha256:"
_CHUNK = 1 << 20


class IntegrityError(RuntimeError):
    """An object's bytes do not match the digest it is stored under."""


class ArtifactNotFound(KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ArtifactPath(type(Path())):
    """A local path to a stored object that remembers the digest it is stored under, so a
    consumer can check the bytes before trusting them (``verify``)."""

    digest: str | None = None
    original_name: str | None = None  # the file's name when the step that made it returned it

    def verify(self) -> ArtifactPath:
        if self.digest is None or sha256_file(self) != self.digest:
            raise IntegrityError(f"{self} does not match its artifact hash {self.digest}")
        return self


@dataclass(frozen=True)
class StoredObject:
    digest: str  # "sha256:<hex>"
    size: int
    suffix: str  # kept so that stored files open in the right program (".gif", ".npy")

    @property
    def hex(self) -> str:
        return self.digest.removeprefix(DIGEST_PREFIX)


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return DIGEST_PREFIX + hashlib.file_digest(f, "sha256").hexdigest()


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _check_suffix(suffix: str) -> str:
    if suffix and (not suffix.startswith(".") or "/" in suffix or len(suffix) > 16):
        raise ValueError(f"bad artifact suffix {suffix!r}")
    return suffix


def _check_digest(digest: str) -> str:
    hex_part = digest.removeprefix(DIGEST_PREFIX)
    if len(hex_part) != 64 or any(c not in "0123456789abcdef" for c in hex_part):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return DIGEST_PREFIX + hex_part


class ArtifactStore:
    """Put and get immutable objects by content hash.

    ``url`` is a folder path or an fsspec URL. Objects live at
    ``<url>/objects/<first two hex digits>/<hex><suffix>``.
    """

    def __init__(self, url: str | os.PathLike, cache_dir: str | os.PathLike | None = None):
        self.url = str(url)
        self.local = _is_local(self.url)
        if self.local:
            self.root = Path(self.url.removeprefix("file://")).resolve()
            self.root.joinpath("objects").mkdir(parents=True, exist_ok=True)
            self.root.joinpath("tmp").mkdir(parents=True, exist_ok=True)
            self._fs = None
        else:
            import fsspec

            self._fs, self._remote_root = fsspec.core.url_to_fs(self.url)
            default_cache = Path(tempfile.gettempdir()) / "fanflow-artifact-cache"
            self.root = Path(cache_dir or os.environ.get("FANFLOW_CACHE", default_cache))
            self.root.joinpath("objects").mkdir(parents=True, exist_ok=True)
            self.root.joinpath("tmp").mkdir(parents=True, exist_ok=True)

    # -- naming -------------------------------------------------------------------------
    def _relative(self, hex_digest: str, suffix: str) -> str:
        return f"objects/{hex_digest[:2]}/{hex_digest}{suffix}"

    def _local_path(self, hex_digest: str, suffix: str) -> Path:
        return self.root / self._relative(hex_digest, suffix)

    def temp_path(self, suffix: str = "") -> Path:
        """A fresh path on the store's file system to write an object into before ``put_file``."""
        return self.root / "tmp" / f"{uuid.uuid4().hex}{_check_suffix(suffix)}.part"

    # -- writing ------------------------------------------------------------------------
    def put_bytes(self, data: bytes, suffix: str = "") -> StoredObject:
        tmp = self.temp_path(suffix)
        with open(tmp, "wb") as f:
            f.write(data)
        return self.put_file(tmp, suffix=suffix, move=True)

    def put_file(self, path: str | os.PathLike, suffix: str = "", move: bool = False) -> StoredObject:
        """Store a file's content; with ``move`` the file (which must be on the store's file
        system, see ``temp_path``) is renamed into place instead of copied."""
        suffix = _check_suffix(suffix)
        src = Path(path)
        if not move:
            tmp = self.temp_path(suffix)
            shutil.copyfile(src, tmp)
            src = tmp
        try:
            with open(src, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
                os.fsync(f.fileno())
            size = src.stat().st_size
            final = self._local_path(digest, suffix)
            if self.local:
                if final.exists():
                    src.unlink()
                else:
                    final.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(src, final)
            else:
                remote = f"{self._remote_root.rstrip('/')}/{self._relative(digest, suffix)}"
                if not self._fs.exists(remote):
                    # Object stores make a put visible only once it is complete.
                    self._fs.put_file(str(src), remote)
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, final)
        finally:
            if src.exists():
                src.unlink()
        return StoredObject(DIGEST_PREFIX + digest, size, suffix)

    # -- reading ------------------------------------------------------------------------
    def path(self, digest: str, suffix: str = "", verify: bool = False) -> ArtifactPath:
        """A local path to the object (fetched into the cache first when the store is
        remote). With ``verify`` its bytes are hashed and must match ``digest``."""
        hex_digest = _check_digest(digest).removeprefix(DIGEST_PREFIX)
        suffix = _check_suffix(suffix)
        local = self._local_path(hex_digest, suffix)
        if not local.exists():
            if self.local:
                raise ArtifactNotFound(f"artifact {digest} is not in the store at {self.url}")
            self._fetch(hex_digest, suffix, local)
        result = ArtifactPath(local)
        result.digest = DIGEST_PREFIX + hex_digest
        return result.verify() if verify else result

    def _fetch(self, hex_digest: str, suffix: str, local: Path) -> None:
        remote = f"{self._remote_root.rstrip('/')}/{self._relative(hex_digest, suffix)}"
        if not self._fs.exists(remote):
            raise ArtifactNotFound(f"artifact sha256:{hex_digest} is not in the store at {self.url}")
        tmp = self.temp_path(suffix)
        self._fs.get_file(remote, str(tmp))
        if sha256_file(tmp) != DIGEST_PREFIX + hex_digest:
            tmp.unlink()
            raise IntegrityError(
                f"artifact sha256:{hex_digest} fetched from {self.url} does not match its hash"
            )
        local.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, local)

    def location(self, digest: str, suffix: str = "") -> str:
        """Where the object lives, for people: its file in a local store, its URL otherwise."""
        hex_digest = _check_digest(digest).removeprefix(DIGEST_PREFIX)
        relative = self._relative(hex_digest, _check_suffix(suffix))
        if self.local:
            return str(self.root / relative)
        return f"{self.url.rstrip('/')}/{relative}"

    def exists(self, digest: str, suffix: str = "") -> bool:
        try:
            self.path(digest, suffix)
        except ArtifactNotFound:
            return False
        return True

    def read_bytes(self, digest: str, suffix: str = "", verify: bool = True) -> bytes:
        data = self.path(digest, suffix).read_bytes()
        if verify and DIGEST_PREFIX + hashlib.sha256(data).hexdigest() != _check_digest(digest):
            raise IntegrityError(f"artifact {digest} does not match its hash")
        return data

    def iter_objects(self):
        """Every object in the store, as (digest, suffix, path) (local stores only)."""
        for path in self.root.joinpath("objects").glob("*/*"):
            name = path.name
            hex_digest, suffix = name[:64], name[64:]
            yield DIGEST_PREFIX + hex_digest, suffix, path

    def delete(self, digest: str, suffix: str = "") -> None:
        hex_digest = _check_digest(digest).removeprefix(DIGEST_PREFIX)
        self._local_path(hex_digest, suffix).unlink(missing_ok=True)
        if not self.local:
            remote = f"{self._remote_root.rstrip('/')}/{self._relative(hex_digest, suffix)}"
            if self._fs.exists(remote):
                self._fs.rm_file(remote)
