"""The order in which a series' images are shown: by place in the patient where every image says where it is,
by Instance Number otherwise. Instance numbers are the modality's count, not the anatomy: a series
renumbered, merged or sent in reverse runs against its geometry, and scrolling must follow the body.

Convention: ascending distance along the slice normal (row direction x column direction of Image Orientation
(Patient)), as Cornerstone3D's sortImageIdsAndGetSpacing (the OHIF viewer's volumes) orders them. For a
standard axial series the normal points to the head, so slices go feet to head whatever the patient position
or the scanner's numbering; sagittal goes right to left, coronal anterior to posterior.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from viewer.archive.client import IndexedInstance

T = TypeVar("T")

# Orientations that differ by less than this (direction cosines) are one stack: scanners write rounded values.
_SAME_ORIENTATION = 1e-3


@dataclass(frozen=True)
class SlicePlace:
    """What ordering needs of an image: UID, Instance Number, Image Position and Orientation (Patient)."""

    uid: str
    number: int | None
    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None

    @property
    def has_geometry(self) -> bool:
        return self.position is not None and self.orientation is not None


def numbers(values: Iterable[Any] | None, count: int) -> tuple[float, ...] | None:
    """A multi-valued decimal string (``ImagePositionPatient``, ...) as ``count`` finite floats, else None."""
    if values is None:
        return None
    if isinstance(values, str):
        values = values.split("\\")
    try:
        parsed = tuple(float(value) for value in values)
    except (TypeError, ValueError):
        return None
    return parsed if len(parsed) == count and all(np.isfinite(parsed)) else None


def indexed_place(item: IndexedInstance) -> SlicePlace:
    """An image as Orthanc's index knows it: slices are ordered without reading the series' files."""
    return SlicePlace(
        uid=item.instance_uid,
        number=item.number,
        position=numbers(item.position or None, 3),
        orientation=numbers(item.orientation or None, 6),
    )


def normal_distance(place: SlicePlace) -> float | None:
    """Distance of the image's first pixel along its slice normal; None without geometry."""
    if place.position is None or place.orientation is None:
        return None
    normal = np.cross(np.array(place.orientation[:3]), np.array(place.orientation[3:]))
    return float(np.dot(normal, np.array(place.position)))


def in_display_order(items: Sequence[T], place: Callable[[T], SlicePlace]) -> list[T]:
    """The items in display order. Geometry orders only a series where every image has it and all share one
    orientation: mixing distances with instance numbers (or distances along different normals, a localizer
    among axials) has no consistent meaning, so such a series is ordered by Instance Number as a whole."""
    places = [place(item) for item in items]
    by_number = [(p.number is None, p.number or 0) for p in places]
    geometric = _one_stack(places)
    distances = [(normal_distance(p) or 0.0) if geometric else 0.0 for p in places]
    keys = [(d, *number, p.uid) for d, number, p in zip(distances, by_number, places, strict=True)]
    return [item for _, item in sorted(zip(keys, items, strict=True), key=lambda pair: pair[0])]


def _one_stack(places: list[SlicePlace]) -> bool:
    if not places or not all(p.has_geometry for p in places):
        return False
    first = np.array(places[0].orientation)
    return all(np.allclose(np.array(p.orientation), first, atol=_SAME_ORIENTATION) for p in places[1:])
