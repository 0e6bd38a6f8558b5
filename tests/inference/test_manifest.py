"""A manifest is accepted whole or refused with every problem listed at once."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from inference.manifest import (
    Clearance,
    Manifest,
    PackageError,
    Priority,
    StateDictRuntime,
    load_manifest,
)
from openaim.uids import is_uid


def refused(folder: Path) -> list[str]:
    with pytest.raises(PackageError) as caught:
        load_manifest(folder)
    return caught.value.problems


def test_valid_package_loads(make_package: Callable[..., Path]) -> None:
    manifest = load_manifest(make_package())
    assert manifest.id == "openaim.tiny-cxr"
    assert manifest.regulatory.status is Clearance.RESEARCH_USE_ONLY
    assert isinstance(manifest.runtime, StateDictRuntime)
    assert manifest.runtime.module == "tests.models:Tiny"
    assert [selector.keyword for selector in manifest.selectors][:2] == ["Modality", "BodyPartExamined"]
    assert manifest.triage[0].priority is Priority.URGENT
    assert manifest.output("Effusion").code is not None
    assert manifest.preprocessing.invert_monochrome1 and manifest.preprocessing.voi


def test_every_problem_is_listed(make_package: Callable[..., Path], manifest_data: dict[str, Any]) -> None:
    outputs = manifest_data["outputs"] + [{"label": "Effusion", "display_name": "Again", "threshold": 1.5}]
    folder = make_package(
        id="Bad Id",
        version="one",
        outputs=outputs,
        triage=[{"label": "Cardiomegaly", "priority": "urgent"}],
        selectors=[{"keyword": "Modalityy", "values": ["CR"]}],
        regulatory={"status": "cleared"},
        preprocessing=manifest_data["preprocessing"] | {"channels": 1},
        runtime={"kind": "state_dict", "weights": "missing.pt", "module": "no colon"},
        device_uid="1.2.03.abc",
        weights_sha256="xyz",
        treshold=0.5,
    )
    problems = refused(folder)
    expected = [
        "id: must be a slug",
        "version: must be a semantic version",
        "outputs.2.threshold: must be between 0 and 1",
        "outputs.2.label: duplicate output label 'Effusion'",
        "triage.0.label: 'Cardiomegaly' is not one of the outputs",
        "selectors.0.keyword: 'Modalityy' is not a DICOM keyword",
        "regulatory: a cleared device must give authority, reference, device_class",
        "preprocessing: mean and std must each have 1 value(s)",
        "runtime.state_dict.module: must be an import path",
        "runtime.weights: file 'missing.pt' is not in the package",
        "device_uid: must be a DICOM UID",
        "weights_sha256: must be 64 hexadecimal digits",
        "treshold: Extra inputs are not permitted",
    ]
    for line in expected:
        assert any(problem.startswith(line) for problem in problems), (line, problems)
    assert len(problems) == len(expected)
    assert all(line in str(PackageError(problems)) for line in problems)


def test_unknown_dicom_keyword_is_refused(manifest_data: dict[str, Any]) -> None:
    manifest_data["selectors"] = [{"keyword": "BodyPart", "values": ["CHEST"]}]
    with pytest.raises(ValueError, match="'BodyPart' is not a DICOM keyword"):
        Manifest.model_validate(manifest_data)


def test_uid_selectors_need_uids(manifest_data: dict[str, Any]) -> None:
    manifest_data["selectors"] = [{"keyword": "SOPClassUID", "values": ["CR Image Storage"]}]
    with pytest.raises(ValueError, match="SOPClassUID values must be DICOM UIDs"):
        Manifest.model_validate(manifest_data)


def test_at_least_one_selector(manifest_data: dict[str, Any]) -> None:
    manifest_data["selectors"] = []
    with pytest.raises(ValueError, match="selectors"):
        Manifest.model_validate(manifest_data)


def test_cleared_status_needs_its_clearance(manifest_data: dict[str, Any]) -> None:
    manifest_data["regulatory"] = {"status": "cleared", "authority": "FDA", "device_class": "II"}
    with pytest.raises(ValueError, match="a cleared device must give reference"):
        Manifest.model_validate(manifest_data)
    manifest_data["regulatory"]["reference"] = "K000000"
    assert Manifest.model_validate(manifest_data).regulatory.status is Clearance.CLEARED


def test_triage_on_unknown_label_is_refused(manifest_data: dict[str, Any]) -> None:
    manifest_data["triage"] = [{"label": "Pneumonia", "priority": "priority", "min_probability": 0.7}]
    with pytest.raises(ValueError, match=r"triage\.0\.label\n.*'Pneumonia' is not one of the outputs"):
        Manifest.model_validate(manifest_data)


@pytest.mark.parametrize("threshold", [0, 1, -0.1, 2])
def test_thresholds_are_open_unit_interval(manifest_data: dict[str, Any], threshold: float) -> None:
    manifest_data["outputs"][1]["threshold"] = threshold
    with pytest.raises(ValueError, match="must be between 0 and 1"):
        Manifest.model_validate(manifest_data)


@pytest.mark.parametrize("weights", ["../weights.pt", "/etc/passwd", "a\\b.pt", ""])
def test_weights_must_stay_inside_the_package(manifest_data: dict[str, Any], weights: str) -> None:
    manifest_data["runtime"] = {"kind": "torchscript", "weights": weights}
    with pytest.raises(ValueError, match="relative path inside the package"):
        Manifest.model_validate(manifest_data)


def test_sha256_is_normalised_to_lower_case(manifest_data: dict[str, Any]) -> None:
    manifest_data["weights_sha256"] = "AB" * 32
    assert Manifest.model_validate(manifest_data).weights_sha256 == "ab" * 32


@pytest.mark.parametrize(
    ("uid", "valid"),
    [
        ("1.2.840.10008.1.2", True),
        ("1.2.03", False),
        ("1..2", False),
        ("1.2.", False),
        ("1." * 32 + "1", False),
    ],
)
def test_dicom_uid_rules(uid: str, valid: bool) -> None:
    assert is_uid(uid) is valid


def test_file_level_problems(tmp_path: Path) -> None:
    assert refused(tmp_path) == ["manifest.json: missing"]
    (tmp_path / "manifest.json").write_text("{\n  'id': 1\n}")
    assert refused(tmp_path)[0].startswith("manifest.json: invalid JSON at line 2 column 3")
    (tmp_path / "manifest.json").write_text(json.dumps(["not", "an", "object"]))
    assert refused(tmp_path) == ["manifest.json: must hold a JSON object"]
    assert refused(tmp_path / "absent")[0].endswith("not a folder")


def test_documented_example_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "inference" / "examples" / "manifest.example.json"
    manifest = Manifest.model_validate_json(example.read_text())
    assert manifest.output("Pneumothorax").code is not None
