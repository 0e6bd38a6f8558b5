"""Heatmaps for the screen: the service stores 8-bit maps; readers see them through one colour map, the
same in the image and in the legend, transparent where the model paid little attention. Only a clinical
version's map is served, and never to a blinded reader before their impression."""

from __future__ import annotations

import io
from functools import cache

import numpy as np
from fastapi import APIRouter, HTTPException
from fastapi.responses import Response
from PIL import Image
from sqlalchemy import select

from inference.catalog import Mode, ModelVersion
from inference.results import Finding, InferenceResult
from viewer.access.deps import DbSession, Reader
from viewer.reading.reads import ai_hidden
from viewer.row_ids import RowId

router = APIRouter()

# A perceptually ordered dark-blue → red → yellow ramp (value 0..1 → sRGB), readable over grey X-rays.
COLOUR_STOPS = (
    (0.00, (13, 8, 135)),
    (0.25, (126, 3, 168)),
    (0.50, (204, 71, 120)),
    (0.75, (248, 149, 64)),
    (1.00, (240, 249, 33)),
)
TRANSPARENT_BELOW = 0.2  # weaker attention is left out so the anatomy underneath stays readable
IMMUTABLE = {"cache-control": "private, max-age=3600"}


@cache
def colour_table() -> np.ndarray:
    """256 RGBA entries: colour from the stops, opacity rising with the value."""
    positions = np.array([stop for stop, _ in COLOUR_STOPS])
    colours = np.array([colour for _, colour in COLOUR_STOPS], dtype=float)
    values = np.linspace(0.0, 1.0, 256)
    rgb = np.stack([np.interp(values, positions, colours[:, channel]) for channel in range(3)], axis=1)
    alpha = np.clip((values - TRANSPARENT_BELOW) / (1 - TRANSPARENT_BELOW), 0.0, 1.0) * 255
    return np.concatenate([rgb, alpha[:, None]], axis=1).round().astype(np.uint8)


def _png(rgba: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgba).save(buffer, format="PNG")
    return buffer.getvalue()


def colour_mapped_png(grey_png: bytes) -> bytes:
    """The stored 8-bit map as an RGBA PNG through the colour map."""
    with Image.open(io.BytesIO(grey_png)) as image:
        values = np.asarray(image.convert("L"))
    return _png(colour_table()[values])


@cache
def legend_png(width: int = 256, height: int = 12) -> bytes:
    """The colour bar beside the opacity slider: 0 on the left, 1 on the right, fully opaque."""
    row = colour_table()[np.linspace(0, 255, width).round().astype(int)].copy()
    row[:, 3] = 255
    return _png(np.repeat(row[None, :, :], height, axis=0))


@router.get("/api/ai/findings/{finding_id}/heatmap.png")
def heatmap(finding_id: RowId, user: Reader, db: DbSession) -> Response:
    query = (
        select(Finding.heatmap_png, InferenceResult.study_uid)
        .join(InferenceResult, InferenceResult.id == Finding.result_id)
        .join(ModelVersion, ModelVersion.id == InferenceResult.model_version_id)
        .where(Finding.id == finding_id, ModelVersion.mode == Mode.CLINICAL.value)
    )
    found = db.execute(query).first()
    if found is None or found.heatmap_png is None:
        raise HTTPException(404, "No heatmap for this finding.")
    if ai_hidden(db, user, found.study_uid):
        raise HTTPException(403, "Blinded read: record your impression of the study first.")
    return Response(colour_mapped_png(found.heatmap_png), media_type="image/png", headers=IMMUTABLE)


@router.get("/api/ai/legend.png")
def legend(_: Reader) -> Response:
    return Response(legend_png(), media_type="image/png", headers=IMMUTABLE)
