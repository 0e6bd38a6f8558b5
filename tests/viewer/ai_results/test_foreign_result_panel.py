"""How another vendor's result reads in the AI panel (frontend/templates/feedback/ai_panel.html and the
foreign_result.html macros it imports), rendered with the viewer's own Jinja2 environment."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom.uid import generate_uid

from openaim.settings import Settings
from viewer.ai_results.view import AlgorithmInfo, FindingView, MissingImage, ResultView
from viewer.templates import make_templates


@pytest.fixture(scope="module")
def panel() -> Any:
    return make_templates(Settings().frontend_dir).env.get_template("feedback/ai_panel.html")


def render(panel: Any, result: ResultView) -> str:
    return str(
        panel.render(
            study_uid="1.2.3",
            hidden=False,
            results=[result],
            impressions=[],
            mine={},
            missed=[],
            reasons={},
            status=SimpleNamespace(value="done"),
            still_working=False,
            overlays=[[]],
            csrf_token="token",
        )
    )


def foreign(algorithm: AlgorithmInfo | None = None, missing: tuple[MissingImage, ...] = ()) -> ResultView:
    return ResultView(
        id=f"foreign-{generate_uid()}",
        source="foreign",
        algorithm=algorithm or AlgorithmInfo(name="LungCAD", version="2.1", vendor="Vendor AI"),
        series_uid=generate_uid(),
        object_uid=generate_uid(),
        kind="SEG",
        findings=(FindingView(id="f-1", label="Nodule", instance_uid=None),),
        missing_images=missing,
    )


def test_twenty_missing_images_are_one_folded_note_with_a_count_and_every_uid_inside(panel: Any) -> None:
    missing = (*(MissingImage(generate_uid()) for _ in range(19)), MissingImage(generate_uid(), 3))
    html = render(panel, foreign(missing=missing))

    assert html.count('data-testid="missing-images"') == 1
    assert re.search(r"<details[^>]*data-testid=\"missing-images\"", html)  # folded: closed until opened
    assert "<summary>20 referenced images are not in the archive</summary>" in html
    for image in missing:
        # each 64-character UID wraps (code.uid in openaim.css) and keeps its full text in a title to copy
        assert f'<code class="uid" title="{image.instance_uid}">{image.instance_uid}</code>' in html
    assert f"{missing[-1].instance_uid}</code>, frame 3" in html
    assert 'data-testid="result-problem"' not in html


def test_one_missing_image_is_counted_in_the_singular(panel: Any) -> None:
    html = render(panel, foreign(missing=(MissingImage(generate_uid()),)))
    assert "<summary>1 referenced image is not in the archive</summary>" in html


def test_a_result_with_every_image_shows_no_missing_note(panel: Any) -> None:
    assert 'data-testid="missing-images"' not in render(panel, foreign())


def test_the_algorithm_links_to_its_repository_and_hostile_text_stays_text(panel: Any) -> None:
    algorithm = AlgorithmInfo(
        name="dcmqi", version="1.2.5", vendor="QIICR", home_url="https://github.com/QIICR/dcmqi.git"
    )
    html = render(panel, foreign(algorithm))
    link = re.search(r'<a class="algorithm-home" href="([^"]*)"[^>]*>([^<]*)</a>', html)
    assert link is not None and link.groups() == ("https://github.com/QIICR/dcmqi.git", "dcmqi")
    assert 'rel="noopener noreferrer"' in html

    hostile = AlgorithmInfo(name="<img src=x onerror=alert(1)>", version="v1", vendor="x")
    html = render(panel, foreign(hostile))
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert 'data-testid="algorithm-home"' not in html


def test_the_panel_css_wraps_long_uids_inside_a_result() -> None:
    css = (Settings().frontend_dir / "static" / "openaim.css").read_text()
    assert re.search(r"\.ai-result \{[^}]*overflow-wrap: anywhere", css)
