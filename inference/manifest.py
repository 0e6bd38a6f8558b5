"""The model package manifest (``manifest.json``): what a model is, what it is for, and how to run it.

A package is refused as a whole, with every problem listed at once: a vendor fixing a manifest one error per
round trip is the failure this module is written against. So the cross-field checks (unique labels, triage
rules naming real outputs) run on the raw JSON beside pydantic's own field checks, not after them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydicom.datadict import dictionary_VR, tag_for_keyword

from openaim.uids import is_uid

MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 20  # a manifest is metadata; anything bigger is a mistake or an attack


class PackageError(Exception):
    """A model package that the platform refuses; ``problems`` holds every reason, one line each."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("model package refused:\n" + "\n".join(f"- {line}" for line in self.problems))


def safe_relative_path(value: str) -> str:
    """A file inside the package: relative, POSIX, no ``..``: a manifest cannot point outside its folder."""
    path = PurePosixPath(value)
    if not value or "\\" in value or path.is_absolute() or ".." in path.parts or value.startswith("~"):
        raise ValueError("must be a relative path inside the package (no '..', no leading '/')")
    return value


def _open_unit(value: float) -> float:
    if not 0.0 < value < 1.0:
        raise ValueError("must be between 0 and 1 (exclusive)")
    return value


def _closed_unit(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be between 0 and 1")
    return value


def _matching(pattern: str, description: str) -> AfterValidator:
    """A regex check whose error says what is expected in words, not as the regex."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.match(value):
            raise ValueError(f"must be {description}")
        return value

    return AfterValidator(check)


def _uid(value: str) -> str:
    if not is_uid(value):
        raise ValueError("must be a DICOM UID: digits and dots, no leading zeros, at most 64 characters")
    return value


Threshold = Annotated[float, AfterValidator(_open_unit)]
UnitValue = Annotated[float, AfterValidator(_closed_unit)]
DicomUID = Annotated[str, AfterValidator(_uid)]
PackageFile = Annotated[str, AfterValidator(safe_relative_path)]
Text = Annotated[str, Field(min_length=1, max_length=4000)]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]


class _Strict(BaseModel):
    # extra="forbid": a misspelt key (``treshold``) must be an error, not a silently ignored default
    model_config = ConfigDict(extra="forbid", frozen=True)


class Clearance(StrEnum):
    RESEARCH_USE_ONLY = "research_use_only"
    INVESTIGATIONAL = "investigational"
    CLEARED = "cleared"


class RegulatoryStatus(_Strict):
    """Shown beside every result, so a reader knows whether a finding comes from a cleared device."""

    status: Clearance
    authority: ShortText | None = None  # FDA, CE, HSA, TGA, ...
    reference: ShortText | None = None  # e.g. a 510(k) number or a certificate number
    device_class: ShortText | None = None  # e.g. "II", "IIa"
    statement: Text | None = None  # the labelling text, e.g. "For research use only."

    @model_validator(mode="after")
    def _cleared_names_its_clearance(self) -> RegulatoryStatus:
        if self.status is Clearance.CLEARED:
            missing = [name for name in ("authority", "reference", "device_class") if not getattr(self, name)]
            if missing:
                raise ValueError(f"a cleared device must give {', '.join(missing)}")
        return self


class PerformanceClaim(_Strict):
    label: str
    metric: Annotated[str, Field(min_length=1, max_length=32)]  # AUROC, sensitivity, specificity, ...
    value: UnitValue
    dataset: ShortText  # the claim is meaningless without where it was measured


class Code(_Strict):
    """A coded concept (SNOMED CT, RadLex, or a private ``99...`` scheme) for the SR the result becomes."""

    value: Annotated[str, Field(min_length=1, max_length=64)]
    scheme: Annotated[
        str, _matching(r"^[A-Za-z0-9_.-]{1,16}\Z", "a coding scheme designator")
    ]  # SCT, RADLEX, DCM, 99OPENAIM
    meaning: Annotated[str, Field(min_length=1, max_length=64)]


class OutputLabel(_Strict):
    """One model output; ``threshold`` is the operating point at which the model calls it positive."""

    label: Annotated[str, _matching(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z", "1-64 of A-Z a-z 0-9 _ . -")]
    display_name: ShortText
    threshold: Threshold
    code: Code | None = None


class Priority(StrEnum):
    URGENT = "urgent"
    PRIORITY = "priority"
    ROUTINE = "routine"


class TriageRule(_Strict):
    """Raise a study's worklist priority when an output is positive.

    Without ``min_probability`` the output's own operating threshold decides, so the triage flag and the
    positive call shown in the viewer can never disagree.
    """

    label: str
    priority: Priority
    min_probability: Threshold | None = None


class Selector(_Strict):
    """A study goes to the model only when every selector matches one of its values (exact match)."""

    keyword: str  # a DICOM keyword: Modality, BodyPartExamined, ViewPosition, SOPClassUID, ...
    values: Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(min_length=1)]

    @field_validator("keyword")
    @classmethod
    def _known_keyword(cls, value: str) -> str:
        if tag_for_keyword(value) is None:
            raise ValueError(f"{value!r} is not a DICOM keyword")
        return value

    @model_validator(mode="after")
    def _uid_values_are_uids(self) -> Selector:
        tag = tag_for_keyword(self.keyword)
        if tag is not None and dictionary_VR(tag) == "UI":
            bad = [value for value in self.values if not is_uid(value)]
            if bad:
                raise ValueError(f"{self.keyword} values must be DICOM UIDs: {', '.join(map(repr, bad))}")
        return self


class ResizeMode(StrEnum):
    RESIZE_SHORT_CROP_CENTER = "resize_short_crop_center"  # CheXNet / torchvision style
    STRETCH = "stretch"
    LETTERBOX = "letterbox"  # keep aspect ratio, pad to square


class Preprocessing(_Strict):
    """How pixels become the input tensor; values are scaled to 0..1 before ``mean``/``std``."""

    input_size: Annotated[int, Field(ge=8, le=4096)]
    channels: Literal[1, 3]
    resize: ResizeMode
    mean: list[float]
    std: list[Annotated[float, Field(gt=0)]]
    voi: bool = True  # apply the file's VOI LUT / window, as a reader would see the image
    invert_monochrome1: bool = True  # models are trained on MONOCHROME2 (bone is bright)

    @model_validator(mode="after")
    def _one_mean_and_std_per_channel(self) -> Preprocessing:
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean and std must each have {self.channels} value(s), one per channel")
        return self


class TorchScriptRuntime(_Strict):
    kind: Literal["torchscript"]
    weights: PackageFile


class StateDictRuntime(_Strict):
    """A state dict plus the class that receives it; the weights file holds tensors only, never code."""

    kind: Literal["state_dict"]
    weights: PackageFile
    module: Annotated[
        str,
        _matching(
            r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*\Z", "an import path 'package.module:ClassName'"
        ),
    ]
    kwargs: dict[str, Any] = Field(default_factory=dict)


class OnnxRuntime(_Strict):
    kind: Literal["onnx"]
    weights: PackageFile


Runtime = Annotated[TorchScriptRuntime | StateDictRuntime | OnnxRuntime, Field(discriminator="kind")]


class Manifest(_Strict):
    manifest_version: Literal[1] = 1
    id: Annotated[str, _matching(r"^[a-z0-9][a-z0-9._-]{1,63}\Z", "a slug: 2-64 of a-z 0-9 . _ -")]
    name: ShortText
    vendor: ShortText
    version: Annotated[
        str,
        Field(max_length=64),
        _matching(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?\Z", "a semantic version such as 1.2.0"),
    ]
    intended_use: Text
    contraindications: list[Text] = Field(default_factory=list)
    regulatory: RegulatoryStatus
    training_data: Text
    performance_claims: list[PerformanceClaim] = Field(default_factory=list)
    outputs: Annotated[list[OutputLabel], Field(min_length=1)]
    triage: list[TriageRule] = Field(default_factory=list)
    selectors: Annotated[list[Selector], Field(min_length=1)]
    preprocessing: Preprocessing
    runtime: Runtime
    weights_sha256: Annotated[str, _matching(r"^[0-9a-fA-F]{64}\Z", "64 hexadecimal digits (sha256)")]
    # Contributing Equipment's Device UID (IHE AIR): a new one for every retrained version
    device_uid: DicomUID

    @field_validator("weights_sha256")
    @classmethod
    def _lower_case(cls, value: str) -> str:
        return value.lower()

    @model_validator(mode="wrap")
    @classmethod
    def _consistent(cls, data: Any, handler: ModelWrapValidatorHandler[Manifest]) -> Manifest:
        problems = consistency_problems(data) if isinstance(data, Mapping) else []
        try:
            manifest = handler(data)
        except ValidationError as error:
            if not problems:
                raise
            raise _merged(cls.__name__, error.errors(), problems) from None
        if problems:
            raise _merged(cls.__name__, [], problems)
        return manifest

    def output(self, label: str) -> OutputLabel:
        return next(output for output in self.outputs if output.label == label)


def consistency_problems(data: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Cross-field checks on raw manifest data; tolerant of bad shapes so they run beside field errors."""
    problems: list[tuple[tuple[str | int, ...], str]] = []

    def labels_of(key: str) -> list[tuple[int, str]]:
        items = data.get(key)
        if not isinstance(items, list):
            return []
        return [
            (index, item["label"])
            for index, item in enumerate(items)
            if isinstance(item, Mapping) and isinstance(item.get("label"), str)
        ]

    outputs = labels_of("outputs")
    seen: set[str] = set()
    for index, label in outputs:
        if label in seen:
            problems.append((("outputs", index, "label"), f"duplicate output label {label!r}"))
        seen.add(label)
    if isinstance(data.get("outputs"), list):
        for key in ("triage", "performance_claims"):
            for index, label in labels_of(key):
                if label not in seen:
                    problems.append(((key, index, "label"), f"{label!r} is not one of the outputs"))
    selectors = data.get("selectors")
    if isinstance(selectors, list):
        keywords: set[str] = set()
        for index, selector in enumerate(selectors):
            keyword = selector.get("keyword") if isinstance(selector, Mapping) else None
            if isinstance(keyword, str):
                if keyword in keywords:
                    problems.append(
                        (("selectors", index, "keyword"), f"{keyword} is selected twice; give one value list")
                    )
                keywords.add(keyword)
    return problems


def _merged(
    title: str, errors: list[Any], problems: list[tuple[tuple[str | int, ...], str]]
) -> ValidationError:
    # Re-raise pydantic's errors with their final messages, plus ours, as one ValidationError.
    details: list[InitErrorDetails] = [
        {
            "type": PydanticCustomError(error["type"], "{message}", {"message": _message(error)}),
            "loc": error["loc"],
            "input": error.get("input"),
        }
        for error in errors
    ]
    details += [
        {
            "type": PydanticCustomError("inconsistent", "{message}", {"message": message}),
            "loc": loc,
            "input": None,
        }
        for loc, message in problems
    ]
    return ValidationError.from_exception_data(title, details)


def _message(error: Mapping[str, Any]) -> str:
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message


def problem_lines(error: ValidationError) -> list[str]:
    """pydantic's errors as ``outputs.2.threshold: must be between 0 and 1 (exclusive)`` lines."""
    return [
        f"{'.'.join(str(part) for part in error_detail['loc']) or 'manifest'}: {_message(error_detail)}"
        for error_detail in error.errors()
    ]


def load_manifest(package_dir: Path) -> Manifest:
    """Read and validate ``manifest.json`` in a package folder; every problem found goes into one error."""
    manifest_path = package_dir / MANIFEST_NAME
    if not package_dir.is_dir():
        raise PackageError(f"{package_dir}: not a folder")
    if not manifest_path.is_file():
        raise PackageError(f"{MANIFEST_NAME}: missing")
    if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
        raise PackageError(f"{MANIFEST_NAME}: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise PackageError(f"{MANIFEST_NAME}: not UTF-8 ({error.reason})") from None
    except json.JSONDecodeError as error:
        raise PackageError(
            f"{MANIFEST_NAME}: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}"
        ) from None
    if not isinstance(data, dict):
        raise PackageError(f"{MANIFEST_NAME}: must hold a JSON object")

    problems: list[str] = []
    manifest: Manifest | None = None
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as error:
        problems += problem_lines(error)
    problems += _missing_weights(package_dir, data)
    if problems or manifest is None:
        raise PackageError(problems)
    return manifest


def _missing_weights(package_dir: Path, data: Mapping[str, Any]) -> list[str]:
    runtime = data.get("runtime")
    weights = runtime.get("weights") if isinstance(runtime, Mapping) else None
    if not isinstance(weights, str):
        return []
    try:
        safe_relative_path(weights)
    except ValueError:
        return []  # already reported by validation
    if not (package_dir / weights).is_file():
        return [f"runtime.weights: file {weights!r} is not in the package"]
    return []
