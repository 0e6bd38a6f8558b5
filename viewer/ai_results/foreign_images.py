"""The study's images that the archive holds, as another vendor's result is read against them.

A foreign SEG or SR may point at images that were never sent to this archive (or were deleted). Such a
finding is still listed, with a note instead of an overlay, and the result names each missing image once:
the reader must see that part of the result cannot be shown, not a silently shorter list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from viewer.ai_results.view import MissingImage


class PresentImages:
    """Answers "is this image (frame) here?" and remembers every answer that was no."""

    def __init__(self, images: Mapping[str, int]) -> None:
        self._images = images  # SOP Instance UID -> number of frames
        self._missing: dict[tuple[str, int | None], None] = {}  # insertion-ordered set

    def has(self, instance_uid: str, frame: int = 1) -> bool:
        frames = self._images.get(instance_uid)
        if frames is None:
            self._missing[(instance_uid, None)] = None
            return False
        if not 1 <= frame <= max(frames, 1):
            self._missing[(instance_uid, frame)] = None
            return False
        return True

    def note(self, instance_uid: str, frame: int = 1) -> str:
        """What a finding says when its image (or the frame of it) is not in the archive."""
        if instance_uid in self._images:
            return f"frame {frame} of the referenced image ({instance_uid}) is not in the archive"
        return f"the referenced image ({instance_uid}) is not in the archive"

    def notes(self, references: Iterable[tuple[str, int]]) -> str:
        """One note for several missing references: a count when there are more than one (a segment over
        200 slices would otherwise say 200 UIDs; the result lists them once, folded)."""
        unique = list(dict.fromkeys(self.note(uid, frame) for uid, frame in references))
        if len(unique) == 1:
            return unique[0]
        return f"{len(unique)} referenced images are not in the archive"

    @property
    def missing(self) -> tuple[MissingImage, ...]:
        """Every missing image (or missing frame of a present image), each once, in the order met."""
        return tuple(MissingImage(uid, frame) for uid, frame in self._missing)
