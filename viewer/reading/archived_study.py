"""Studies the archive holds: the only ones feedback, impressions and reads may be about.

A UID the archive does not hold made a ghost study: feedback and impressions were saved for it, and it
entered the review queue. The platform's study index answers first (one indexed query); Orthanc is asked
only when the index lacks the study, since the index follows Orthanc's changes a moment behind (a study
that has just arrived may be open in a reader's browser before it is indexed).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException
from sqlalchemy import select
from sqlalchemy.orm import Session

from inference.study_index import IndexedStudy
from viewer.access.deps import ArchiveClient, DbSession
from viewer.archive.client import Archive
from viewer.archive.uids import StudyUID


def indexed(db: Session, study_uid: str) -> bool:
    return db.scalar(select(IndexedStudy.id).where(IndexedStudy.study_uid == study_uid).limit(1)) is not None


async def in_archive(db: Session, archive: Archive, study_uid: str) -> bool:
    return indexed(db, study_uid) or await archive.find_study(study_uid) is not None


async def archived_study(study_uid: StudyUID, db: DbSession, archive: ArchiveClient) -> str:
    """The route's study UID, once the archive is known to hold it; 404 with the reason otherwise."""
    if not await in_archive(db, archive, study_uid):
        raise HTTPException(404, f"Study {study_uid} is not in the archive.")
    return study_uid


# A route about one study that the archive must hold takes this after its role check, so that a user
# without the role learns nothing about which studies exist.
ArchivedStudy = Annotated[str, Depends(archived_study)]
