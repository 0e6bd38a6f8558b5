"""AI results as the reading room shows them, whoever made them: this platform's models or another
vendor's SEG and TID 1500 SR found in the archive. One shape, so the panel, the overlays and the audit
treat both alike.

Coordinates are in source-image pixels (column, row) of the image named by ``instance_uid`` and ``frame``;
the viewport maps them to the screen. Text here is DICOM or manifest text: the page escapes it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

OverlayKind = Literal["heatmap", "mask", "box", "polyline", "point", "ellipse"]
Source = Literal["platform", "foreign"]


@dataclass(frozen=True)
class Overlay:
    """Something drawn over one frame: an image (heatmap, mask) stretched over ``region``, or a shape."""

    id: str
    kind: OverlayKind
    instance_uid: str
    frame: int = 1
    image_url: str | None = None  # heatmap/mask: an RGBA PNG, already colour-mapped by the server
    region: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1 the image covers
    rect: tuple[float, float, float, float] | None = None  # box: x0, y0, x1, y1
    points: tuple[tuple[float, float], ...] = ()  # polyline / ellipse (the four axis end points)
    closed: bool = False
    point: tuple[float, float] | None = None
    label: str = ""
    colour: str | None = None


@dataclass(frozen=True)
class AlgorithmInfo:
    """Which algorithm made a result (IHE AIR: always shown beside it)."""

    name: str
    version: str
    vendor: str
    device_uid: str | None = None
    regulatory_status: str | None = None  # research_use_only | investigational | cleared | None (unknown)
    intended_use: str | None = None
    card_url: str | None = None  # the model card page, for this platform's models
    home_url: str | None = None  # http(s) only: another vendor's repository, named in its equipment

    @property
    def on_trial(self) -> bool:
        """Not a cleared device: the reader sees a banner saying so."""
        return self.regulatory_status != "cleared"


@dataclass(frozen=True)
class FindingView:
    id: str
    label: str  # what it is, e.g. "Effusion" or a SEG segment's label
    instance_uid: str | None  # the image it is on (None: the study as a whole)
    frame: int = 1
    probability: float | None = None
    threshold: float | None = None
    positive: bool | None = None  # None: the result does not say (e.g. a plain segmentation)
    overlays: tuple[Overlay, ...] = ()
    note: str = ""  # e.g. "the referenced image is not in the archive"
    details: tuple[str, ...] = ()  # measurements and evaluations as text, e.g. "Diameter: 10 mm"

    @property
    def below_threshold(self) -> bool:
        if self.probability is None or self.threshold is None:
            return False
        return self.probability < self.threshold


@dataclass(frozen=True)
class MissingImage:
    """An image (or one frame of a present image) that a result refers to and the archive lacks."""

    instance_uid: str
    frame: int | None = None  # None: the whole image is missing


@dataclass(frozen=True)
class ResultView:
    id: str  # "platform-<result id>" or "foreign-<SOP Instance UID>"
    source: Source
    algorithm: AlgorithmInfo
    series_uid: str  # the series the result is about
    object_uid: str  # the SR / SEG (or platform result) SOP Instance UID, for the audit trail
    kind: str  # what the archive holds: "TID 1500 SR", "SEG", "TID 1500 SR + SEG", or why nothing
    triage: str | None = None
    created: str | None = None  # ISO date-time
    findings: tuple[FindingView, ...] = ()
    problems: tuple[str, ...] = field(default_factory=tuple)  # e.g. an object that could not be read
    # listed apart from the problems: a result may refer to hundreds, which the panel folds into one note
    missing_images: tuple[MissingImage, ...] = ()

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["algorithm"]["on_trial"] = self.algorithm.on_trial
        for finding, view in zip(data["findings"], self.findings, strict=True):
            finding["below_threshold"] = view.below_threshold
        return data
