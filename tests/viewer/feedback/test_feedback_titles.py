"""The feedback history is titled for whose rows it shows: a reader's own, or, for an admin, everyone's."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.viewer.conftest import sign_in


def _title_heading_and_link(html: str) -> tuple[str, str, str]:
    title = re.search(r"<title>(.*?) · openaim</title>", html)
    heading = re.search(r'<h1 data-testid="feedback-heading">(.*?)</h1>', html)
    link = re.search(r'<a href="/my/feedback">(.*?)</a>', html)
    assert title and heading and link, html
    return title.group(1), heading.group(1), link.group(1)


def test_a_reader_sees_my_feedback(client: TestClient) -> None:
    sign_in(client, "radiologist")
    page = client.get("/my/feedback")
    assert page.status_code == 200
    assert _title_heading_and_link(page.text) == ("My feedback", "My feedback", "My feedback")


def test_an_admin_sees_everyones_feedback_under_that_name(client: TestClient) -> None:
    sign_in(client, "admin")
    everyone = _title_heading_and_link(client.get("/my/feedback").text)
    assert everyone == ("Everyone&#39;s feedback", "Everyone&#39;s feedback", "All feedback")
    one = _title_heading_and_link(client.get("/my/feedback?user=radiologist").text)
    assert one == ("Feedback of radiologist", "Feedback of radiologist", "All feedback")
