"""CheXNet checkpoints: every published layout to the same DenseNet121 weights, nothing unpickled before the
hash matches, nothing but tensors and stand-ins unpickled after, and a package the platform installs."""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import pickle
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.sr._concepts_dict import concepts

from inference.models import chexnet
from inference.models.chexnet import CheckpointError, read_checkpoint
from inference.models.densenet import DenseNet121
from inference.package import open_package
from inference.runtime.loader import load_model
from inference.runtime.transform import to_model_input
from openaim.settings import Settings
from openaim.uids import is_uid

from .conftest import (
    StateDict,
    random_densenet,
    sha256_of,
    write_jrzech,
    write_modern,
    write_modern_sequential_head,
    write_pytorch04,
    write_widely_copied,
)

LAYOUTS: dict[str, Callable[[StateDict, Path], None]] = {
    "a: torchvision state dict": write_modern,
    "a: torchvision state dict, classifier.0 head": write_modern_sequential_head,
    "b: PyTorch 0.4 names, legacy file": write_pytorch04,
    "c: module.densenet121. prefix in {'state_dict': ...}": write_widely_copied,
    "d: jrzech whole pickled model, legacy file": write_jrzech,
    "d: jrzech whole pickled model, zip file": lambda state, path: write_jrzech(state, path, legacy=False),
}
WITHOUT_BATCH_COUNTER = ("b:", "c:")


def without_counters(state: StateDict) -> StateDict:
    return {name: value for name, value in state.items() if not name.endswith("num_batches_tracked")}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_published_layout_loads_to_the_same_weights_and_logits(
    layout: str, tmp_path: Path, reference_model: DenseNet121, reference_state: StateDict
) -> None:
    path = tmp_path / "checkpoint"
    LAYOUTS[layout](reference_state, path)

    state = read_checkpoint(path, sha256=sha256_of(path))

    assert list(state) == list(reference_state)  # every key, in torchvision's order
    mismatched = [
        name
        for name, value in without_counters(reference_state).items()
        if not torch.equal(state[name], value)
    ]
    assert not mismatched
    counter = state["features.norm0.num_batches_tracked"]
    assert counter.item() == (0 if layout.startswith(WITHOUT_BATCH_COUNTER) else 7)
    model = DenseNet121()
    model.load_state_dict(state, strict=True)
    image = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert torch.equal(model.eval()(image), reference_model(image))


@pytest.mark.parametrize(
    ("published", "torchvision"),
    [
        ("features.denseblock2.denselayer3.norm.1.weight", "features.denseblock2.denselayer3.norm1.weight"),
        ("features.denseblock4.denselayer16.conv.2.weight", "features.denseblock4.denselayer16.conv2.weight"),
        ("module.densenet121.features.norm0.bias", "features.norm0.bias"),
        ("module.densenet121.classifier.0.weight", "classifier.weight"),
        ("module.features.transition1.norm.running_var", "features.transition1.norm.running_var"),
        ("features.transition1.conv.weight", "features.transition1.conv.weight"),
    ],
)
def test_published_names_become_torchvisions(published: str, torchvision: str) -> None:
    assert chexnet.torchvision_name(published) == torchvision


def test_git_blob_hash_is_gits() -> None:
    assert chexnet.git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"  # git hash-object
    assert chexnet.git_blob_sha1(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"


def test_without_a_sha256_only_the_reference_checkpoint_is_accepted(
    tmp_path: Path, reference_state: StateDict
) -> None:
    path = tmp_path / "checkpoint"
    write_modern(reference_state, path)
    with pytest.raises(CheckpointError, match=f"git blob sha1 .* expected {chexnet.REFERENCE_GIT_BLOB_SHA1}"):
        read_checkpoint(path)
    assert read_checkpoint(path, sha256=sha256_of(path).upper())  # a hash the caller vouches for, any case


class CreatesFile:
    """Unpickling this creates a file: the proof that unpickling happened."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return builtins.open, (str(self.marker), "w")


class RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def test_the_marker_pickle_creates_its_file_when_unpickled_unsafely(tmp_path: Path) -> None:
    # The fixture works: the tests below that find no marker file are not passing by accident.
    marker = tmp_path / "unpickled"
    pickle.loads(pickle.dumps(CreatesFile(marker))).close()  # noqa: S301 - on purpose, our own bytes
    assert marker.exists()


def test_a_wrong_hash_is_refused_before_anything_is_unpickled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / "checkpoint"
    torch.save({"model": CreatesFile(marker)}, path, _use_new_zipfile_serialization=False)
    loads: list[Any] = []
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: loads.append(args))

    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        read_checkpoint(path, sha256=hashlib.sha256(b"another file").hexdigest())
    with pytest.raises(CheckpointError, match="git blob sha1"):
        read_checkpoint(path)

    assert not marker.exists()
    assert loads == []


@pytest.mark.parametrize("payload", [CreatesFile, RunsShell])
@pytest.mark.parametrize("legacy", [True, False], ids=["legacy file", "zip file"])
def test_a_disallowed_global_is_refused_even_with_the_right_hash(
    payload: type, legacy: bool, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / "checkpoint"
    torch.save({"model": payload(marker), "epoch": 1}, path, _use_new_zipfile_serialization=not legacy)

    with pytest.raises(CheckpointError, match=r"names (builtins|io|posix|os)\.\w+, which is not allowed"):
        read_checkpoint(path, sha256=sha256_of(path))
    assert not marker.exists()


def legacy_file(main_pickle: bytes) -> bytes:
    """A pre-1.6 ``torch.save`` file around a hand-made pickle: magic number, protocol, system information,
    the object, then the (here empty) list of storages."""
    version = torch.serialization.PROTOCOL_VERSION
    system = {
        "protocol_version": version,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 4},
    }
    header = [torch.serialization.MAGIC_NUMBER, version, system]
    return (
        b"".join(pickle.dumps(item, protocol=2) for item in header)
        + main_pickle
        + pickle.dumps([], protocol=2)
    )


def sets_attribute(module: str, name: str, attribute: str) -> bytes:
    """A pickle that loads the global ``module.name`` and BUILDs ``attribute = True`` onto it (slot state)."""
    key = attribute.encode()
    return b"".join(
        [
            b"\x80\x02c" + f"{module}\n{name}\n".encode(),  # PROTO 2, GLOBAL
            b"N}X" + len(key).to_bytes(4, "little") + key + b"\x88s\x86",  # (None, {attribute: True})
            b"b.",  # BUILD, STOP
        ]
    )


class Victim:
    changed = False


def test_the_build_pickle_changes_a_class_when_unpickled_unsafely() -> None:
    try:
        pickle.loads(sets_attribute(Victim.__module__, "Victim", "changed"))  # noqa: S301 - our own bytes
        assert Victim.changed is True
    finally:
        Victim.changed = False


@pytest.mark.parametrize(
    ("module", "name", "target"),
    [
        ("torchvision.models.densenet", "DenseNet", chexnet.PickledModule),
        ("torch._utils", "_rebuild_tensor_v2", torch._utils._rebuild_tensor_v2),
    ],
)
def test_a_checkpoint_cannot_change_the_classes_and_functions_it_may_name(
    module: str, name: str, target: Any, tmp_path: Path
) -> None:
    # torch.load reads dump_patches and __name__ of the module classes in pre-1.6 files to decide whether,
    # and where, to write a patch file: a checkpoint setting them would write files of its choosing.
    path = tmp_path / "checkpoint"
    path.write_bytes(legacy_file(sets_attribute(module, name, "dump_patches")))
    with pytest.raises(CheckpointError, match="sets the state of"):
        read_checkpoint(path, sha256=sha256_of(path))
    assert getattr(target, "dump_patches", False) is False


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_a_torchscript_archive_is_refused(tmp_path: Path) -> None:
    # torch.load would hand it to torch.jit.load, which is not a restricted unpickler
    path = tmp_path / "checkpoint"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    with pytest.raises(CheckpointError, match="TorchScript"):
        read_checkpoint(path, sha256=sha256_of(path))


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path: Path, reference_state: StateDict) -> None:
    linear = tmp_path / "linear"
    torch.save(torch.nn.Linear(4, 2).state_dict(), linear)
    with pytest.raises(CheckpointError, match=r"no classifier\.weight"):
        read_checkpoint(linear, sha256=sha256_of(linear))

    truncated = tmp_path / "truncated"
    torch.save({k: v for k, v in reference_state.items() if "denselayer16" not in k}, truncated)
    with pytest.raises(CheckpointError, match=r"missing features\.denseblock3\.denselayer16\.norm1\.weight"):
        read_checkpoint(truncated, sha256=sha256_of(truncated))


@pytest.fixture(scope="module")
def chest_image() -> np.ndarray:
    png = Settings().shared_data_dir / "cxr14" / "small" / "00000075_000.png"
    return np.asarray(Image.open(png).convert("L"))


def test_the_converted_package_installs_through_the_platform_and_predicts(
    tmp_path: Path, reference_model: DenseNet121, reference_state: StateDict, chest_image: np.ndarray
) -> None:
    checkpoint = tmp_path / "checkpoint"
    write_jrzech(reference_state, checkpoint)

    manifest = chexnet.write_package(checkpoint, tmp_path / "package", sha256=sha256_of(checkpoint))

    assert sorted(path.name for path in (tmp_path / "package").iterdir()) == ["manifest.json", "weights.pt"]
    package = open_package(tmp_path / "package")
    model = load_model(package)
    image, _ = to_model_input(chest_image, package.manifest.preprocessing)
    with torch.inference_mode():
        probabilities = torch.sigmoid(model(image[None]))
        expected = torch.sigmoid(reference_model(image[None]))
    torch.testing.assert_close(probabilities, expected)
    assert manifest == package.manifest
    assert [output.label for output in manifest.outputs] == list(chexnet.LABELS)
    assert manifest.runtime.kind == "state_dict"
    assert (manifest.runtime.module, manifest.runtime.kwargs) == (
        "inference.models.densenet:DenseNet121",
        {"num_classes": 14},
    )
    weights = torch.load(tmp_path / "package" / "weights.pt", weights_only=True)
    assert list(weights) == list(reference_state)


def test_the_manifest_says_what_the_model_expects_and_is(tmp_path: Path, reference_state: StateDict) -> None:
    checkpoint = tmp_path / "checkpoint"
    write_modern(reference_state, checkpoint)
    manifest = chexnet.write_package(checkpoint, tmp_path / "package", sha256=sha256_of(checkpoint))

    preprocessing = manifest.preprocessing
    assert (preprocessing.input_size, preprocessing.channels, preprocessing.resize) == (
        224,
        3,
        "resize_short_crop_center",
    )
    assert (preprocessing.mean, preprocessing.std) == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert manifest.regulatory.status == "research_use_only"
    assert {selector.keyword: selector.values for selector in manifest.selectors} == {
        "Modality": ["CR", "DX"],
        "BodyPartExamined": ["CHEST"],
        "ViewPosition": ["PA", "AP"],
    }
    assert manifest.weights_sha256 == sha256_of(tmp_path / "package" / "weights.pt")
    assert is_uid(manifest.device_uid) and manifest.device_uid.startswith("2.25.")
    assert all(output.threshold == 0.5 for output in manifest.outputs)
    written = json.loads((tmp_path / "package" / "manifest.json").read_text())
    assert written["outputs"][2]["code"] == {
        "value": "60046008",
        "scheme": "SCT",
        "meaning": "Pleural effusion",
    }


def test_the_device_uid_follows_the_weights(tmp_path: Path, reference_state: StateDict) -> None:
    other = random_densenet(seed=5).state_dict()
    uids = []
    for name, state in (("first", reference_state), ("again", reference_state), ("other", other)):
        checkpoint = tmp_path / f"{name}.pt"
        write_modern(state, checkpoint)
        manifest = chexnet.write_package(checkpoint, tmp_path / name, sha256=sha256_of(checkpoint))
        uids.append(manifest.device_uid)
    assert uids[0] == uids[1]  # the same weights give the same UID, whoever converts them
    assert uids[0] != uids[2]


def test_snomed_codes_are_the_dicom_standards() -> None:
    # Only concepts that DICOM's own code tables list, with that one meaning and no other.
    meanings: dict[str, set[str]] = {}
    for by_code in concepts["SCT"].values():
        for code, (meaning, _) in by_code.items():
            meanings.setdefault(code, set()).add(meaning)
    for label, (value, meaning) in chexnet.SNOMED_CODES.items():
        assert meanings.get(value) == {meaning}, label


def test_a_package_is_not_written_over_other_files(tmp_path: Path, reference_state: StateDict) -> None:
    checkpoint = tmp_path / "checkpoint"
    write_modern(reference_state, checkpoint)
    (tmp_path / "package").mkdir()
    (tmp_path / "package" / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not empty"):
        chexnet.write_package(checkpoint, tmp_path / "package", sha256=sha256_of(checkpoint))


def test_a_model_with_other_outputs_is_not_packaged_as_chexnet(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint"
    write_modern(random_densenet(num_classes=3).state_dict(), checkpoint)
    with pytest.raises(CheckpointError, match="3 outputs; CheXNet has 14"):
        chexnet.write_package(checkpoint, tmp_path / "package", sha256=sha256_of(checkpoint))


def test_command_line_converts_or_explains_why_not(
    tmp_path: Path, reference_state: StateDict, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = tmp_path / "checkpoint"
    write_modern(reference_state, checkpoint)

    assert chexnet.main([str(checkpoint), str(tmp_path / "refused")]) == 2
    assert "git blob sha1" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()

    assert chexnet.main([str(checkpoint), str(tmp_path / "package"), "--sha256", sha256_of(checkpoint)]) == 0
    assert "weights.pt" in capsys.readouterr().out
    open_package(tmp_path / "package")  # raises PackageError if the manifest or the weights hash were wrong
