"""Minutes of a review meeting, as a PDF to file and a CSV to analyse: title, date, chair, attendees and,
per case, its number, the algorithm, the finding, the discrepancy and what the meeting decided.

Cases appear by number only; the minutes carry no patient identifier (learning points were cleaned of them
when they were saved). Free text goes into the PDF as escaped text, never as markup, and into the CSV with
a leading quote where a spreadsheet would take it for a formula.
"""

from __future__ import annotations

import csv
import io
from dataclasses import astuple, dataclass, fields
from xml.sax.saxutils import escape

from fastapi import APIRouter
from fastapi.responses import Response
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from openaim import audit
from viewer.access.deps import Audit, AuditTrail, DbSession, Reviewer
from viewer.review.meetings import MeetingId, meeting_or_404
from viewer.review.records import ReviewMeeting

router = APIRouter()

NOT_DECIDED = "not decided"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
COLUMN_WIDTHS_MM = (12, 38, 34, 40, 26, 58, 50)


@dataclass(frozen=True)
class MinutesRow:
    case: int
    model: str
    finding: str
    discrepancy: str
    outcome: str
    learning_point: str
    follow_up: str
    decided_by: str
    decided_at: str


def minutes_rows(meeting: ReviewMeeting) -> list[MinutesRow]:
    rows = []
    for case in meeting.cases:
        decision = case.decision
        rows.append(
            MinutesRow(
                case=case.position,
                model=case.models,
                finding=case.findings,
                discrepancy=case.discrepancy.replace("_", " "),
                outcome=decision.outcome_label if decision else NOT_DECIDED,
                learning_point=decision.learning_point if decision else "",
                follow_up=decision.follow_up if decision else "",
                decided_by=decision.decided_by.display_name if decision else "",
                decided_at=decision.decided_at.isoformat(timespec="minutes") if decision else "",
            )
        )
    return rows


def _cell(value: object) -> str:
    text = str(value)
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def minutes_csv(meeting: ReviewMeeting) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([field.name for field in fields(MinutesRow)])
    for row in minutes_rows(meeting):
        writer.writerow([_cell(value) for value in astuple(row)])
    return buffer.getvalue().encode("utf-8")


def _meeting_facts(meeting: ReviewMeeting) -> list[tuple[str, str]]:
    ended = f"to {meeting.ended_at:%H:%M UTC}" if meeting.ended_at else "(still running)"
    attendees = ", ".join(attendee.name for attendee in meeting.attendees) or "none recorded"
    return [
        ("Date", f"{meeting.started_at:%Y-%m-%d, %H:%M UTC} {ended}"),
        ("Chair", meeting.chair.display_name),
        ("Attendees", attendees),
        ("Cases", str(len(meeting.cases))),
    ]


def minutes_pdf(meeting: ReviewMeeting) -> bytes:
    styles = getSampleStyleSheet()
    body, small = styles["BodyText"], styles["BodyText"].clone("small", fontSize=8, leading=10)

    def text(value: str, style: object = small) -> Paragraph:
        return Paragraph(escape(value).replace("\n", "<br/>"), style)

    story: list[object] = [Paragraph(escape(f"Review meeting minutes: {meeting.title}"), styles["Title"])]
    story += [text(f"{label}: {value}", body) for label, value in _meeting_facts(meeting)]
    story.append(Spacer(1, 6 * mm))
    header = ["Case", "Model / version", "Finding", "Discrepancy", "Outcome", "Learning point", "Follow-up"]
    table_rows = [[text(item) for item in header]]
    for row in minutes_rows(meeting):
        values = (str(row.case), row.model, row.finding, row.discrepancy, row.outcome)
        table_rows.append([text(item) for item in (*values, row.learning_point, row.follow_up)])
    table = Table(table_rows, colWidths=[width * mm for width in COLUMN_WIDTHS_MM], repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                ("BACKGROUND", (0, 0), (-1, 0), colors.lightgrey),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    story.append(table)
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer, pagesize=landscape(A4), title=f"Review meeting minutes: {meeting.title}", author="openaim"
    )
    document.build(story)
    return buffer.getvalue()


def _export(trail: AuditTrail, meeting: ReviewMeeting, file_format: str) -> None:
    trail.record(
        audit.EventType.EXPORT,
        action=audit.Action.READ,
        detail={"review_meeting": meeting.id, "format": file_format, "cases": len(meeting.cases)},
    )


def _download(content: bytes, media_type: str, meeting: ReviewMeeting, suffix: str) -> Response:
    disposition = f'attachment; filename="review-meeting-{meeting.id}-minutes.{suffix}"'
    return Response(content, media_type=media_type, headers={"content-disposition": disposition})


@router.get("/review/meetings/{meeting_id}/minutes.pdf")
def pdf(meeting_id: MeetingId, _: Reviewer, db: DbSession, trail: Audit) -> Response:
    meeting = meeting_or_404(db, meeting_id)
    _export(trail, meeting, "pdf")
    return _download(minutes_pdf(meeting), "application/pdf", meeting, "pdf")


@router.get("/review/meetings/{meeting_id}/minutes.csv")
def csv_file(meeting_id: MeetingId, _: Reviewer, db: DbSession, trail: Audit) -> Response:
    meeting = meeting_or_404(db, meeting_id)
    _export(trail, meeting, "csv")
    return _download(minutes_csv(meeting), "text/csv; charset=utf-8", meeting, "csv")
