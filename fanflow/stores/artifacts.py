"""Content-addressed artifact store.

Every object is named by the sha256 of its bytes and written atomically (a temporary file,
then a rename), so a crash never leaves a half-written object under a final name; a write that
fails (a full disk) removes its temporary file. Objects are read-only once stored.

Every read is verified against the object's name: the first time an object is read (or when
it is written) its bytes are hashed, and a *stamp* of the file as it was then (size, inode,
mtime and ctime) is kept beside it; later reads hash again only when the file no longer
matches its stamp. Any write to the file changes its ctime, which no program can set back, so
a changed object is always hashed again. An object that fails verification is moved to
``quarantine/`` and reported; writing the same content again puts a good copy in its place.

The store is a local folder by default; any fsspec URL (``s3://bucket/prefix``, ``gs://...``,
``memory://...``) works too, with objects fetched into a local cache on first read (and
verified there) so that arrays can still be memory-mapped.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DIGEST_PREFIX = "sha256:"
TEMP_SUFFIX = ".part"
VERIFY_ENV = "FANFLOW_VERIFY"  # "0" turns read verification off (for measurements only)


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


@dataclass(frozen=True)
class Damaged:
    """An object that failed verification, and where it was moved."""

    digest: str
    suffix: str
    path: Path
    quarantined: Path | None


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return DIGEST_PREFIX + hashlib.file_digest(f, "sha256").hexdigest()


def _stamp(st: os.stat_result) -> str:
    return f"{st.st_size} {st.st_ino} {st.st_dev} {st.st_mtime_ns} {st.st_ctime_ns}"


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _check_suffix(suffix: str) -> str:
    if suffix and (not suffix.startswith(".") or "/" in suffix or len(suffix) > 16):
        raise ValueError(f"bad artifact suffix {suffix!r}")
    return suffix


_HEX = frozenset("0123456789abcdef")


def _check_digest(digest: str) -> str:
    hex_part = digest.removeprefix(DIGEST_PREFIX)
    if len(hex_part) != 64 or not _HEX.issuperset(hex_part):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return DIGEST_PREFIX + hex_part


class ArtifactStore:
    """Put and get immutable objects by content hash.

    ``url`` is a folder path or an fsspec URL. Objects live at
    ``<url>/objects/<first two hex digits>/<hex><suffix>``; their stamps at the same place
    under ``stamps/``; temporary files in ``tmp/``; objects that failed verification in
    ``quarantine/``. ``verify`` (default: on, unless $FANFLOW_VERIFY is 0) checks every read.
    """

    def __init__(
        self, url: str | os.PathLike, cache_dir: str | os.PathLike | None = None, verify: bool | None = None
    ):
        self.url = str(url)
        self.local = _is_local(self.url)
        self.verify_reads = os.environ.get(VERIFY_ENV, "1") != "0" if verify is None else verify
        if self.local:
            self.root = Path(self.url.removeprefix("file://")).resolve()
            self._fs = None
        else:
            import fsspec

            self._fs, self._remote_root = fsspec.core.url_to_fs(self.url)
            default_cache = Path(tempfile.gettempdir()) / "fanflow-artifact-cache"
            self.root = Path(cache_dir or os.environ.get("FANFLOW_CACHE", default_cache))
        self.root.joinpath("objects").mkdir(parents=True, exist_ok=True)
        self.root.joinpath("tmp").mkdir(parents=True, exist_ok=True)
        self._stamps: dict[Path, str] = {}  # stamps this process has read or written

    # -- naming -------------------------------------------------------------------------
    def _relative(self, hex_digest: str, suffix: str) -> str:
        return f"objects/{hex_digest[:2]}/{hex_digest}{suffix}"

    def _local_path(self, hex_digest: str, suffix: str) -> Path:
        return self.root / self._relative(hex_digest, suffix)

    def _stamp_path(self, hex_digest: str, suffix: str) -> Path:
        return self.root / "stamps" / hex_digest[:2] / f"{hex_digest}{suffix}"

    def _remote(self, hex_digest: str, suffix: str) -> str:
        return f"{self._remote_root.rstrip('/')}/{self._relative(hex_digest, suffix)}"

    def temp_path(self, suffix: str = "") -> Path:
        """A fresh path on the store's file system to write an object into before ``put_file``."""
        return self.root / "tmp" / f"{uuid.uuid4().hex}{_check_suffix(suffix)}{TEMP_SUFFIX}"

    @contextlib.contextmanager
    def writing(self, suffix: str = "") -> Iterator[Path]:
        """A temporary path to write an object into; removed if the write fails (a full disk
        leaves nothing behind)."""
        tmp = self.temp_path(suffix)
        try:
            yield tmp
        except OSError as exc:
            discard(tmp)
            # NumPy reports a short write without an errno ("... requested and ... written").
            if exc.errno in (errno.ENOSPC, errno.EDQUOT) or "requested and" in str(exc):
                raise self._full() from exc
            raise
        except BaseException:
            discard(tmp)
            raise

    def _full(self) -> OSError:
        try:
            free = f"{shutil.disk_usage(self.root).free / 1e6:.1f} MB free"
        except OSError:
            free = "no space"
        return OSError(
            errno.ENOSPC,
            f"the disk holding the artifact store {self.root} is full ({free}): free some space "
            "(`fanflow gc` drops old runs and the artifacts only they used), then resume the run",
        )

    # -- writing ------------------------------------------------------------------------
    def put_bytes(self, data: bytes, suffix: str = "") -> StoredObject:
        with self.writing(suffix) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
            return self.put_file(tmp, suffix=suffix, move=True)

    def put_file(self, path: str | os.PathLike, suffix: str = "", move: bool = False) -> StoredObject:
        """Store a file's content; with ``move`` the file (which must be on the store's file
        system, see ``temp_path``) is renamed into place instead of copied. An object already
        stored under the same digest is kept if it verifies and replaced if it does not."""
        suffix = _check_suffix(suffix)
        with self.writing(suffix) as tmp:
            src = Path(path) if move else tmp
            try:
                if not move:
                    shutil.copyfile(path, tmp)
                with open(src, "rb") as f:
                    digest = hashlib.file_digest(f, "sha256").hexdigest()
                    os.fsync(f.fileno())
                size = src.stat().st_size
                final = self._local_path(digest, suffix)
                if self.local:
                    if not (final.exists() and self._intact(final, digest, suffix)):
                        self._place(src, final, digest, suffix)
                else:
                    remote = self._remote(digest, suffix)
                    if not self._fs.exists(remote):
                        # Object stores make a put visible only once it is complete.
                        self._fs.put_file(str(src), remote)
                    self._place(src, final, digest, suffix)
            finally:
                discard(src)  # gone already once renamed into place
        return StoredObject(DIGEST_PREFIX + digest, size, suffix)

    def _place(self, src: Path, final: Path, hex_digest: str, suffix: str) -> None:
        """Rename a hashed file into place (read-only) and stamp it as verified."""
        os.chmod(src, 0o444)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, final)
        self._write_stamp(final, hex_digest, suffix, os.stat(final))

    def _write_stamp(self, path: Path, hex_digest: str, suffix: str, st: os.stat_result) -> None:
        stamp = self._stamp_path(hex_digest, suffix)
        self._stamps[path] = _stamp(st)
        with contextlib.suppress(OSError):  # no stamp only means hashing again next time
            stamp.parent.mkdir(parents=True, exist_ok=True)
            tmp = stamp.with_name(f"{stamp.name}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")
            tmp.write_text(_stamp(st), encoding="ascii")
            os.replace(tmp, stamp)

    def _intact(self, path: Path, hex_digest: str, suffix: str, *, trust_stamp: bool = True) -> bool:
        """Whether the file holds the bytes its name says: by its stamp when it still
        matches, else by hashing it (and stamping it when it is good)."""
        try:
            st = os.stat(path)
            if trust_stamp:
                now = _stamp(st)
                if self._stamps.get(path) == now:
                    return True
                with contextlib.suppress(OSError):
                    if self._stamp_path(hex_digest, suffix).read_text(encoding="ascii") == now:
                        self._stamps[path] = now
                        return True
            self._stamps.pop(path, None)
            good = sha256_file(path) == DIGEST_PREFIX + hex_digest
        except FileNotFoundError:
            return False
        if good:
            self._write_stamp(path, hex_digest, suffix, st)
        return good

    # -- reading ------------------------------------------------------------------------
    def path(self, digest: str, suffix: str = "", verify: bool | None = None) -> ArtifactPath:
        """A local path to the object (fetched into the cache first when the store is
        remote), verified unless ``verify`` is False (default: the store's setting). A
        damaged object is quarantined and raises IntegrityError; from a remote store it is
        fetched again first."""
        hex_digest = _check_digest(digest).removeprefix(DIGEST_PREFIX)
        suffix = _check_suffix(suffix)
        local = self._local_path(hex_digest, suffix)
        if not local.exists():
            if self.local:
                raise ArtifactNotFound(f"artifact {digest} is not in the store at {self.url}")
            self._fetch(hex_digest, suffix, local)
        if (self.verify_reads if verify is None else verify) and not self._intact(local, hex_digest, suffix):
            self._damaged(hex_digest, suffix)
        result = ArtifactPath(local)
        result.digest = DIGEST_PREFIX + hex_digest
        return result

    def _damaged(self, hex_digest: str, suffix: str) -> None:
        """A local object failed verification: quarantine it and raise. (A remote store's
        cached copy is fetched again instead: only the copy was bad.)"""
        if not self.local:
            local = self._local_path(hex_digest, suffix)
            local.unlink(missing_ok=True)
            self._fetch(hex_digest, suffix, local)
            return
        moved = self.quarantine(DIGEST_PREFIX + hex_digest, suffix)
        raise IntegrityError(
            f"artifact {DIGEST_PREFIX}{hex_digest} in {self.url} is damaged (its bytes do not match its "
            f"hash); moved to {moved}: run the step that made it again, or see `fanflow doctor`"
        )

    def _fetch(self, hex_digest: str, suffix: str, local: Path) -> None:
        remote = self._remote(hex_digest, suffix)
        if not self._fs.exists(remote):
            raise ArtifactNotFound(f"artifact sha256:{hex_digest} is not in the store at {self.url}")
        with self.writing(suffix) as tmp:
            self._fs.get_file(remote, str(tmp))
            if sha256_file(tmp) != DIGEST_PREFIX + hex_digest:
                raise IntegrityError(
                    f"artifact sha256:{hex_digest} fetched from {self.url} does not match its hash"
                )
            self._place(tmp, local, hex_digest, suffix)

    def location(self, digest: str, suffix: str = "") -> str:
        """Where the object lives, for people: its file in a local store, its URL otherwise."""
        hex_digest = _check_digest(digest).removeprefix(DIGEST_PREFIX)
        relative = self._relative(hex_digest, _check_suffix(suffix))
        if self.local:
            return str(self.root / relative)
        return f"{self.url.rstrip('/')}/{relative}"

    def exists(self, digest: str, suffix: str = "") -> bool:
        try:
            self.path(digest, suffix, verify=False)
        except ArtifactNotFound:
            return False
        return True

    def intact(self, digest: str, suffix: str = "") -> str | None:
        """None when the object is there and verifies, else what is wrong with it (a damaged
        object is quarantined)."""
        try:
            self.path(digest, suffix)
        except (ArtifactNotFound, IntegrityError) as exc:
            return str(exc)
        return None

    def read_bytes(self, digest: str, suffix: str = "", verify: bool | None = None) -> bytes:
        """The object's bytes; verified by hashing them (they are in memory anyway)."""
        data = self.path(digest, suffix, verify=False).read_bytes()
        if (self.verify_reads if verify is None else verify) and (
            DIGEST_PREFIX + hashlib.sha256(data).hexdigest() != _check_digest(digest)
        ):
            self._damaged(digest.removeprefix(DIGEST_PREFIX), suffix)
            data = self.path(digest, suffix, verify=True).read_bytes()  # fetched again
        return data

    # -- the whole store ----------------------------------------------------------------
    def iter_objects(self):
        """Every object in the store, as (digest, suffix, path) (local stores only)."""
        for path in self.root.joinpath("objects").glob("*/*"):
            name = path.name
            hex_digest, suffix = name[:64], name[64:]
            yield DIGEST_PREFIX + hex_digest, suffix, path

    def check_all(self, *, quarantine: bool = True) -> Iterator[Damaged]:
        """Hash every object (stamps are not trusted) and yield those that fail, moved to
        quarantine unless ``quarantine`` is False. Good objects get a fresh stamp."""
        for digest, suffix, path in self.iter_objects():
            hex_digest = digest.removeprefix(DIGEST_PREFIX)
            if len(hex_digest) == 64 and self._intact(path, hex_digest, suffix, trust_stamp=False):
                continue
            moved = self.quarantine(digest, suffix, path) if quarantine else None
            yield Damaged(digest, suffix, path, moved)

    def quarantine(self, digest: str, suffix: str = "", path: Path | None = None) -> Path | None:
        """Move an object aside to ``quarantine/`` (to look at; nothing reads it there)."""
        hex_digest = digest.removeprefix(DIGEST_PREFIX)
        path = path or self._local_path(hex_digest, suffix)
        folder = self.root / "quarantine"
        folder.mkdir(exist_ok=True)
        target = folder / f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self._stamp_path(hex_digest, suffix).unlink(missing_ok=True)
        self._stamps.pop(path, None)
        try:
            os.replace(path, target)
        except FileNotFoundError:  # another reader moved it first
            return None
        return target

    def temp_files(self, older_than: float = 0.0) -> list[Path]:
        """Temporary files left by writes that never finished (a killed process), last
        changed more than ``older_than`` seconds ago."""
        cutoff = time.time() - older_than
        found = []
        for folder in (self.root / "tmp", self.root / "stamps"):
            for path in folder.rglob(f"*{TEMP_SUFFIX}") if folder.exists() else ():
                with contextlib.suppress(FileNotFoundError):
                    if path.is_file() and path.stat().st_mtime <= cutoff:
                        found.append(path)
        return found

    def delete(self, digest: str, suffix: str = "") -> None:
        hex_digest = _check_digest(digest).removeprefix(DIGEST_PREFIX)
        self._local_path(hex_digest, suffix).unlink(missing_ok=True)
        self._stamp_path(hex_digest, suffix).unlink(missing_ok=True)
        if not self.local:
            remote = self._remote(hex_digest, suffix)
            if self._fs.exists(remote):
                self._fs.rm_file(remote)


def discard(path: Path) -> None:
    """Remove a file, and for a temporary file the ``.npy`` twin NumPy may have written
    beside it (``np.save`` appends ``.npy`` to a name that does not end in it)."""
    twins = [Path(f"{path}.npy")] if path.name.endswith(TEMP_SUFFIX) else []
    for candidate in (path, *twins):
        with contextlib.suppress(OSError):
            candidate.unlink()
