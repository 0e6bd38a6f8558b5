"""No patient identifier reaches the application logs: access logs drop query strings."""

from __future__ import annotations

import logging

from openaim.logs import DropQueryStrings


def test_access_log_line_keeps_the_path_and_drops_the_query() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/worklist?patient_id=DEMO-000123&accession=A1", "1.1", 200),
        None,
    )
    assert DropQueryStrings().filter(record)
    line = record.getMessage()
    assert "/worklist" in line
    assert "DEMO-000123" not in line and "accession" not in line
