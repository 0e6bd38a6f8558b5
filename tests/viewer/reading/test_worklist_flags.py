"""The worklist's triage flags: urgent, priority and routine each look different without colour (a word and
an icon of its own), so a colour-blind reader tells them apart at a glance too."""

from __future__ import annotations

import re

from openaim.settings import REPO_ROOT
from viewer.reading.study_status import AIStatus, StudyStatus, Triage
from viewer.reading.worklist import Entry, WorklistRow
from viewer.templates import make_templates

FLAGGED = (Triage.URGENT, Triage.PRIORITY, Triage.ROUTINE)


def _row(flag: Triage) -> str:
    study = WorklistRow(f"1.2.3.{flag.rank}", "DOE^J", "P1", "2024-01-01", "", "CR", "", "A1", "1")
    entry = Entry(study, StudyStatus(AIStatus.DONE, flag, read=False))
    template = make_templates(REPO_ROOT / "frontend").get_template("reading/worklist_rows.html")
    return template.render(entries=[entry])


def _flag_cell(flag: Triage) -> str:
    cell = re.search(r"<td>(.*?)</td>", _row(flag), re.S)
    assert cell is not None
    return cell.group(1)


def test_each_level_shows_its_word_and_an_icon_of_its_own() -> None:
    icons = []
    for flag in FLAGGED:
        cell = _flag_cell(flag)
        assert f'data-testid="flag">{flag.value}</span>' in cell
        icon = re.search(r'data-testid="flag-icon">([^<]+)<', cell)
        assert icon is not None, f"{flag.value} has no icon"
        icons.append(icon.group(1))
    assert len(set(icons)) == len(FLAGGED)  # three shapes, not one shape in three colours
    assert _flag_cell(Triage.NONE) == ""  # no AI flag at all is not routine: neither word nor icon


def test_the_worklist_stylesheet_styles_every_level() -> None:
    css = (REPO_ROOT / "frontend" / "static" / "reading" / "worklist.css").read_text()
    for flag in FLAGGED:
        assert f".triage-icon-{flag.value}" in css and f".badge.priority-{flag.value}" in css
