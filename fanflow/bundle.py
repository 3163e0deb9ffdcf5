"""Workflow bundles: one self-contained, versioned file to run a workflow elsewhere.

``fanflow pack WORKFLOW`` writes ``NAME-VERSION.fanflow``, a zip holding the workflow file (and
the files of the sub-workflows it uses), the project's own modules its steps import, and the
pinned requirements of everything else they import. VERSION is the sha256 of that content
(each file's path and bytes, in order), so equal content gives an equal bundle, byte for byte.
``fanflow run BUNDLE`` checks the hash, unpacks it once into the project folder and runs it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import io
import json
import sys
import zipfile
import zlib
from importlib import metadata
from pathlib import Path

import yaml

from fanflow import __version__
from fanflow.spec.errors import SpecError, SpecIssue
from fanflow.spec.loader import load_workflow
from fanflow.spec.subflows import is_workflow_reference, resolve_reference

SUFFIX = ".fanflow"
MANIFEST = "bundle.json"
MAX_UNPACKED = 512 * 2**20  # a workflow and its modules; more is not a bundle fanflow wrote
_EPOCH = (1980, 1, 1, 0, 0, 0)


class BundleError(SpecError):
    pass


def pack(workflow_path: str | Path, output_dir: str | Path = ".") -> Path:
    """Write the bundle of a workflow file; returns its path."""
    workflow_path = Path(workflow_path).resolve()
    spec = load_workflow(workflow_path)
    workflow_files = _workflow_files(workflow_path)
    roots = [Path(p) for p in spec.import_paths] or [workflow_path.parent]
    modules, third_party = _code(spec, roots)
    files = sorted(set(workflow_files) | set(modules))
    base = Path(_common_root(files))
    payload = {str(path.relative_to(base)): path.read_bytes() for path in files}
    requirements = _pins(third_party)
    payload["requirements.txt"] = "".join(f"{line}\n" for line in requirements).encode()
    version = content_hash(payload)
    manifest = {
        "name": spec.name,
        "version": version,
        "workflow": str(workflow_path.relative_to(base)),
        "import_paths": sorted(str(Path(p).resolve().relative_to(base)) for p in roots
                               if Path(p).resolve().is_relative_to(base)),
        "fanflow": __version__,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "requirements": requirements,
    }
    out = Path(output_dir) / f"{spec.name}-{version[:12]}{SUFFIX}"
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(payload):
            _write(archive, f"files/{name}", payload[name])
        _write(archive, MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
    tmp = out.with_suffix(out.suffix + ".part")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(out)
    return out


def content_hash(payload: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(payload):
        digest.update(name.encode() + b"\0" + hashlib.sha256(payload[name]).digest())
    return digest.hexdigest()


def _write(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


def is_bundle(path: str | Path) -> bool:
    path = Path(path)
    return path.suffix == SUFFIX and path.is_file()


def unpack(bundle: str | Path, home: str | Path) -> tuple[Path, dict]:
    """Check a bundle and unpack it (once) under ``home/bundles``; returns the workflow file
    to run and the bundle's manifest."""
    bundle = Path(bundle)
    try:
        with zipfile.ZipFile(bundle) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
            if unpacked > MAX_UNPACKED:
                raise ValueError(f"it would unpack to {unpacked / 2**20:.0f} MiB")
            manifest = json.loads(archive.read(MANIFEST))
            payload = {n.removeprefix("files/"): archive.read(n) for n in archive.namelist() if n.startswith("files/")}
        if not isinstance(manifest, dict) or not isinstance(manifest.get("workflow"), str):
            raise ValueError(f"its {MANIFEST} names no workflow file")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, ValueError, OSError, EOFError,
            zlib.error, NotImplementedError, RuntimeError) as exc:
        # A damaged zip fails in many ways (a bad CRC, a broken deflate stream, a truncated
        # directory): each is the same thing to the user.
        detail = str(exc).strip("'\"") or type(exc).__name__
        raise BundleError(SpecIssue(f"not a valid fanflow bundle ({detail}): pack it again with "
                                    "`fanflow pack`", file=str(bundle))) from None
    version = content_hash(payload)
    if version != manifest.get("version"):
        raise BundleError(SpecIssue(f"the bundle's content does not match its version {manifest.get('version')!r}: "
                                    "it was changed after it was packed", file=str(bundle)))
    target = Path(home) / "bundles" / version
    if not (target / ".complete").exists():
        staging = target.with_name(target.name + ".part")
        for name, data in payload.items():
            path = (staging / name).resolve()
            if not path.is_relative_to(staging.resolve()):
                raise BundleError(SpecIssue(f"unsafe path {name!r} in the bundle", file=str(bundle)))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (staging / ".complete").touch()
        if target.exists():
            import shutil

            shutil.rmtree(target)
        staging.replace(target)
    workflow = (target / manifest["workflow"]).resolve()
    if not workflow.is_relative_to(target.resolve()):
        raise BundleError(SpecIssue(f"unsafe workflow path {manifest['workflow']!r} in the bundle", file=str(bundle)))
    return target / manifest["workflow"], manifest


def missing_requirements(manifest: dict) -> list[str]:
    """Requirements of the bundle that this environment does not satisfy, as text."""
    problems = []
    for line in manifest.get("requirements", []):
        name, _, wanted = line.partition("==")
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name} is not installed (the bundle wants {wanted})")
            continue
        if wanted and have != wanted:
            problems.append(f"{name} {have} is installed (the bundle was packed with {wanted})")
    return problems


# -- what goes in ----------------------------------------------------------------------------
def _workflow_files(path: Path, seen: set[Path] | None = None) -> list[Path]:
    """The workflow file and those of the sub-workflows it uses, recursively."""
    seen = seen or set()
    if path in seen:
        return []
    seen.add(path)
    files = [path]
    if path.suffix in (".yaml", ".yml"):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for step in (data.get("steps") or {}).values():
            uses = step.get("uses") if isinstance(step, dict) else None
            if is_workflow_reference(uses) and not uses.startswith("workflow:"):
                files += _workflow_files(resolve_reference(uses, str(path)), seen)
    return files


def _code(spec, roots: list[Path]) -> tuple[list[Path], set[str]]:
    """The project's own modules the steps need (under the workflow's folders), and the
    top-level names of everything else they import."""
    local: set[Path] = set()
    third_party: set[str] = set()
    queue = sorted({step.uses.partition(":")[0] for step in spec.steps.values()})
    seen: set[str] = set()
    sys_path = [str(r) for r in roots] + sys.path
    while queue:
        module = queue.pop()
        if module in seen:
            continue
        seen.add(module)
        origin = _origin(module, sys_path)
        root = next((r for r in roots if origin and origin.is_relative_to(r)), None)
        if origin is None or root is None:
            third_party.add(module.split(".")[0])
            continue
        local.add(origin)
        local |= _package_inits(origin, root)
        if origin.suffix == ".py":
            queue += _imports(origin, module)
    return sorted(local), third_party


def _origin(module: str, path: list[str]) -> Path | None:
    saved = sys.path[:]
    sys.path[:] = path
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    finally:
        sys.path[:] = saved
    if spec is None or not spec.origin or not spec.has_location:
        return None
    return Path(spec.origin).resolve()


def _package_inits(origin: Path, root: Path) -> set[Path]:
    inits = set()
    folder = origin.parent
    while folder.is_relative_to(root) and folder != root:
        if (folder / "__init__.py").exists():
            inits.add(folder / "__init__.py")
        folder = folder.parent
    return inits


def _imports(path: Path, module: str) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError):
        return []
    names = []
    package = module.rpartition(".")[0] if path.name != "__init__.py" else module
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names.append(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                names.append(node.module)
    return [n for n in names if n]


def _pins(top_level: set[str]) -> list[str]:
    distributions = metadata.packages_distributions()
    pins = {f"fanflow=={__version__}"}
    for name in top_level:
        if name in sys.stdlib_module_names:
            continue
        for dist in distributions.get(name, []):
            try:
                pins.add(f"{dist}=={metadata.version(dist)}")
            except metadata.PackageNotFoundError:
                continue
    return sorted(pins, key=str.lower)


def _common_root(paths: list[Path]) -> str:
    import os

    return os.path.commonpath([str(p.parent) for p in paths])
