"""A model package on disk: a folder (or a ``.zip`` / ``.tar.gz`` of one) holding a manifest and weights.

Weights files are pickles, and unpickling runs code, so the order here is the point of this module: the
archive is unpacked only if no member could land outside the target folder, and the weights are hashed and
compared with the manifest before torch sees a single byte of them.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from inference.manifest import (
    MANIFEST_NAME,
    Manifest,
    OnnxRuntime,
    PackageError,
    StateDictRuntime,
    TorchScriptRuntime,
    load_manifest,
)

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz")
MAX_UNPACKED_BYTES = 8 << 30  # a zip bomb stops here, well above any imaging model we expect
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelPackage:
    manifest: Manifest
    root: Path  # the folder holding manifest.json

    @property
    def weights_path(self) -> Path:
        return self.root / self.manifest.runtime.weights


def open_package(path: Path, extract_to: Path | None = None) -> ModelPackage:
    """Open a package folder, or unpack an archive into ``extract_to`` (empty) or a new temporary folder.

    The caller owns the unpacked folder: the catalog unpacks into its install area and keeps it.
    """
    if path.is_dir():
        return ModelPackage(load_manifest(path), path)
    if not path.is_file():
        raise PackageError(f"{path}: no such folder or file")
    if not path.name.lower().endswith(ARCHIVE_SUFFIXES):
        raise PackageError(f"{path.name}: not a package folder or a {', '.join(ARCHIVE_SUFFIXES)} archive")
    target = _empty_folder(extract_to)
    unpack_archive(path, target)
    return ModelPackage(load_manifest(_package_root(target)), _package_root(target))


def unpack_archive(archive: Path, target: Path) -> None:
    """Unpack only plain files and folders, and only when every member name stays inside ``target``."""
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zip_file:
                _unpack(target, list(_zip_members(zip_file)))
        else:
            with tarfile.open(archive, "r:gz") as tar_file:
                _unpack(target, list(_tar_members(tar_file)))
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as error:
        raise PackageError(f"{archive.name}: cannot be unpacked ({error})") from None


@dataclass(frozen=True)
class _Member:
    name: str
    kind: str  # "file", "dir", or what it is when it is neither (refused)
    size: int
    open: Any  # () -> binary file object


def _zip_members(zip_file: zipfile.ZipFile) -> Iterator[_Member]:
    for info in zip_file.infolist():
        mode = info.external_attr >> 16
        kind = "symbolic link" if stat.S_ISLNK(mode) else "dir" if info.is_dir() else "file"
        yield _Member(info.filename, kind, info.file_size, lambda info=info: zip_file.open(info))


def _tar_members(tar_file: tarfile.TarFile) -> Iterator[_Member]:
    for info in tar_file.getmembers():
        if info.isfile():
            kind = "file"
        elif info.isdir():
            kind = "dir"
        elif info.issym() or info.islnk():
            kind = "link"
        else:
            kind = "special file"
        yield _Member(info.name, kind, info.size, lambda info=info: tar_file.extractfile(info))


def _member_problem(name: str) -> str | None:
    path = PurePosixPath(name)
    if not name or "\\" in name or path.is_absolute() or re.match(r"^[A-Za-z]:", name):
        return f"{name!r}: absolute or non-POSIX path"
    if ".." in path.parts:
        return f"{name!r}: path leaves the package ('..')"
    return None


def _unpack(target: Path, members: list[_Member]) -> None:
    problems: list[str] = []
    seen: set[str] = set()
    for member in members:
        problem = _member_problem(member.name)
        if problem:
            problems.append(problem)
        elif member.kind not in ("file", "dir"):
            problems.append(f"{member.name!r}: a {member.kind}; packages hold plain files only")
        normal = str(PurePosixPath(member.name))
        if member.kind == "file" and normal in seen:
            problems.append(f"{member.name!r}: appears twice")
        seen.add(normal)
    if sum(member.size for member in members) > MAX_UNPACKED_BYTES:
        problems.append(f"unpacks to more than {MAX_UNPACKED_BYTES} bytes")
    if problems:
        raise PackageError(problems)

    root = target.resolve()
    for member in members:
        destination = (root / member.name).resolve()
        if not destination.is_relative_to(root):  # belt and braces after the name checks
            raise PackageError(f"{member.name!r}: path leaves the package")
        if member.kind == "dir":
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        with member.open() as source, destination.open("xb") as sink:
            shutil.copyfileobj(source, sink, _CHUNK)


def _empty_folder(folder: Path | None) -> Path:
    if folder is None:
        return Path(tempfile.mkdtemp(prefix="openaim-package-"))
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise PackageError(f"{folder}: the folder to unpack into is not empty")
    return folder


def _package_root(folder: Path) -> Path:
    # Archives made with `zip -r model.zip model/` hold one top folder; accept that as well as a flat one.
    if (folder / MANIFEST_NAME).exists():
        return folder
    entries = list(folder.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / MANIFEST_NAME).is_file():
        return entries[0]
    return folder


def _checked_weights_path(package: ModelPackage) -> Path:
    root = package.root.resolve()
    path = package.weights_path.resolve()
    if not path.is_relative_to(root):  # e.g. a symbolic link in a package folder
        raise PackageError(f"runtime.weights: {package.manifest.runtime.weights!r} leads outside the package")
    if not path.is_file():
        raise PackageError(
            f"runtime.weights: file {package.manifest.runtime.weights!r} is not in the package"
        )
    return path


def _check_digest(package: ModelPackage, actual: str) -> None:
    expected = package.manifest.weights_sha256
    if not hmac.compare_digest(actual, expected):
        raise PackageError(
            f"weights_sha256: {package.manifest.runtime.weights!r} has sha256 {actual}, "
            f"the manifest says {expected}; refusing to load it"
        )


def verify_weights(package: ModelPackage) -> Path:
    """Hash the weights in chunks and compare with the manifest; the path comes back only if they match."""
    path = _checked_weights_path(package)
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
    _check_digest(package, digest.hexdigest())
    return path


@contextmanager
def _verified_stream(package: ModelPackage) -> Iterator[IO[bytes]]:
    # Read once, hash those bytes, load those bytes: nobody can swap the file between check and load.
    verify_weights(package)
    data = _checked_weights_path(package).read_bytes()
    _check_digest(package, hashlib.sha256(data).hexdigest())
    yield io.BytesIO(data)


def load_weights(package: ModelPackage) -> Any:
    """The verified weights: a ``torch.jit.ScriptModule``, or a state dict (a mapping of tensors).

    State dicts are loaded with ``weights_only=True``: even a file with the right hash cannot run code.
    """
    runtime = package.manifest.runtime
    if isinstance(runtime, OnnxRuntime):
        verify_weights(package)
        raise PackageError(
            "runtime.kind: onnx packages can be catalogued, but this platform runs no ONNX yet"
        )

    import pickle

    import torch  # here, not at module level: importing torch costs seconds at start-up

    with _verified_stream(package) as stream:
        try:
            if isinstance(runtime, TorchScriptRuntime):
                return torch.jit.load(stream, map_location="cpu")
            assert isinstance(runtime, StateDictRuntime)
            state = torch.load(stream, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, ValueError) as error:
            raise PackageError(f"runtime.weights: cannot be loaded as {runtime.kind} ({error})") from None
    if not isinstance(state, Mapping) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise PackageError("runtime.weights: a state_dict package must hold a mapping of names to tensors")
    return state
