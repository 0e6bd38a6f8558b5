"""Package archives unpack only inside their folder; weights are hashed before anything is unpickled."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from inference.manifest import PackageError
from inference.package import ModelPackage, load_weights, open_package, verify_weights


class _TouchOnUnpickle:
    """A stand-in for a malicious weights file: unpickling it creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


def _set_manifest(folder: Path, **changes: object) -> None:
    path = folder / "manifest.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def _zip(folder: Path, archive: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w") as zip_file:
        for file in sorted(folder.iterdir()):
            zip_file.write(file, prefix + file.name)
    return archive


def test_folder_opens_and_state_dict_loads(make_package: Callable[..., Path]) -> None:
    package = open_package(make_package())
    assert verify_weights(package) == package.weights_path.resolve()
    state = load_weights(package)
    assert set(state) == {"weight", "bias"}
    assert state["weight"].shape == (2, 4)
    torch.nn.Linear(4, 2).load_state_dict(state)


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")
def test_torchscript_loads(make_package: Callable[..., Path]) -> None:
    folder = make_package()
    torch.jit.save(torch.jit.script(torch.nn.Linear(4, 2)), folder / "model.ts")
    digest = hashlib.sha256((folder / "model.ts").read_bytes()).hexdigest()
    _set_manifest(folder, runtime={"kind": "torchscript", "weights": "model.ts"}, weights_sha256=digest)
    module = load_weights(open_package(folder))
    assert module(torch.zeros(1, 4)).shape == (1, 2)


def test_hash_mismatch_is_refused_before_unpickling(
    make_package: Callable[..., Path], tmp_path: Path
) -> None:
    folder = make_package()
    marker = tmp_path / "unpickled"
    (folder / "weights.pt").write_bytes(pickle.dumps(_TouchOnUnpickle(marker)))
    pickle.loads((folder / "weights.pt").read_bytes())  # noqa: S301  the bait works: it touches the marker
    assert marker.exists()
    marker.unlink()

    package = open_package(folder)  # the manifest still holds the hash of the real Linear weights
    with pytest.raises(PackageError, match=r"weights_sha256: 'weights\.pt' has sha256 .* refusing"):
        load_weights(package)
    with pytest.raises(PackageError, match="refusing"):
        verify_weights(package)
    assert not marker.exists()


def test_right_hash_still_cannot_run_code(make_package: Callable[..., Path], tmp_path: Path) -> None:
    """A vendor can sign a malicious file too: state dicts are loaded with weights_only=True."""
    folder = make_package()
    marker = tmp_path / "unpickled"
    buffer = io.BytesIO()
    torch.save({"weight": _TouchOnUnpickle(marker)}, buffer)
    (folder / "weights.pt").write_bytes(buffer.getvalue())
    _set_manifest(folder, weights_sha256=hashlib.sha256(buffer.getvalue()).hexdigest())
    with pytest.raises(PackageError, match="cannot be loaded as state_dict"):
        load_weights(open_package(folder))
    assert not marker.exists()


def test_weights_that_are_not_a_state_dict_are_refused(make_package: Callable[..., Path]) -> None:
    folder = make_package()
    torch.save({"epoch": 3, "state": {}}, folder / "weights.pt")
    _set_manifest(folder, weights_sha256=hashlib.sha256((folder / "weights.pt").read_bytes()).hexdigest())
    with pytest.raises(PackageError, match="mapping of names to tensors"):
        load_weights(open_package(folder))


def test_weights_link_leaving_the_package_is_refused(
    make_package: Callable[..., Path], tmp_path: Path
) -> None:
    folder = make_package()
    outside = tmp_path / "outside.pt"
    (folder / "weights.pt").rename(outside)
    (folder / "weights.pt").symlink_to(outside)
    with pytest.raises(PackageError, match="leads outside the package"):
        verify_weights(ModelPackage(open_package(folder).manifest, folder))


@pytest.mark.parametrize("prefix", ["", "tiny-cxr/"])
def test_zip_package_opens(make_package: Callable[..., Path], tmp_path: Path, prefix: str) -> None:
    archive = _zip(make_package(), tmp_path / "tiny.zip", prefix)
    package = open_package(archive, tmp_path / "unpacked")
    assert package.manifest.id == "openaim.tiny-cxr"
    assert package.root == tmp_path / "unpacked" / prefix.rstrip("/")
    assert set(load_weights(package)) == {"weight", "bias"}


def test_tar_gz_package_opens_in_a_temporary_folder(
    make_package: Callable[..., Path], tmp_path: Path
) -> None:
    folder = make_package()
    archive = tmp_path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar_file:
        tar_file.add(folder, arcname="tiny")
    package = open_package(archive)
    assert package.root.name == "tiny" and package.root.parent.name.startswith("openaim-package-")
    verify_weights(package)


def test_zip_with_traversal_is_refused(make_package: Callable[..., Path], tmp_path: Path) -> None:
    archive = _zip(make_package(), tmp_path / "evil.zip")
    with zipfile.ZipFile(archive, "a") as zip_file:
        zip_file.writestr("../evil", b"escaped")
        zip_file.writestr("/abs/evil", b"escaped")
    with pytest.raises(PackageError) as caught:
        open_package(archive, tmp_path / "unpacked")
    assert caught.value.problems == [
        "'../evil': path leaves the package ('..')",
        "'/abs/evil': absolute or non-POSIX path",
    ]
    assert not (tmp_path / "evil").exists()
    assert not any((tmp_path / "unpacked").iterdir())  # refused before anything was written


def test_tar_with_traversal_or_links_is_refused(make_package: Callable[..., Path], tmp_path: Path) -> None:
    folder = make_package()
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar_file:
        tar_file.add(folder / "manifest.json", arcname="manifest.json")
        evil = tarfile.TarInfo("sub/../../evil")
        evil.size = 7
        tar_file.addfile(evil, io.BytesIO(b"escaped"))
        link = tarfile.TarInfo("weights.pt")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar_file.addfile(link)
    with pytest.raises(PackageError) as caught:
        open_package(archive, tmp_path / "unpacked")
    assert caught.value.problems == [
        "'sub/../../evil': path leaves the package ('..')",
        "'weights.pt': a link; packages hold plain files only",
    ]
    assert not (tmp_path / "evil").exists()


def test_unpack_target_must_be_empty(make_package: Callable[..., Path], tmp_path: Path) -> None:
    archive = _zip(make_package(), tmp_path / "tiny.zip")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "old").write_text("x")
    with pytest.raises(PackageError, match="not empty"):
        open_package(archive, tmp_path / "busy")


def test_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(PackageError, match="not a package folder"):
        open_package(tmp_path / "model.pt")
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(PackageError, match="cannot be unpacked"):
        open_package(tmp_path / "broken.zip", tmp_path / "out")
