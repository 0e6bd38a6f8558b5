"""Frame encodings without an archive: the platform's multipart answer reads back as the frames it wrote."""

from __future__ import annotations

from viewer.reading.frame_encoding import EXPLICIT_LE, multipart_body, parse_multipart


def test_multipart_body_round_trips() -> None:
    frames = [b"\x00\x01--not-a-boundary", b"", b"\r\n\r\n"]
    boundary = "b0undary"
    content_type = f'multipart/related; type="application/octet-stream"; boundary={boundary}'
    parts = parse_multipart(content_type, multipart_body(frames, boundary))
    assert [part.data for part in parts] == frames
    assert {part.transfer_syntax for part in parts} == {EXPLICIT_LE}
