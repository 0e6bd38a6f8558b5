"""A multipart/related stream is read part by part, wherever the network cut it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from viewer.archive.multipart import MultipartError, multipart_bodies

CONTENT_TYPE = 'multipart/related; type="application/dicom"; boundary=b0und'
BODY = (
    b"--b0und\r\nContent-Type: application/dicom\r\n\r\nfirst\r\n--b\r\n"
    b"\r\n--b0und\r\nContent-Type: application/dicom\r\n\r\n"
    b"\r\n--b0und\r\n\r\nthird, without headers"
    b"\r\n--b0und--\r\n"
)
PARTS = [b"first\r\n--b\r\n", b"", b"third, without headers"]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 11, len(BODY)])
def test_parts_come_whole_wherever_the_stream_is_cut(size: int) -> None:
    chunks = [BODY[start : start + size] for start in range(0, len(BODY), size)]
    assert list(multipart_bodies(CONTENT_TYPE, chunks)) == PARTS


def test_a_part_is_given_before_the_rest_has_arrived() -> None:
    def network() -> Iterator[bytes]:
        second = BODY.index(b"\r\n--b0und\r\nContent-Type", 10)
        yield BODY[: second + len(b"\r\n--b0und\r\n")]  # the next delimiter and its line end
        raise AssertionError("read further than the first part needed")

    assert next(multipart_bodies(CONTENT_TYPE, network())) == PARTS[0]


def test_a_cut_off_answer_and_a_missing_boundary_are_errors() -> None:
    with pytest.raises(MultipartError):
        list(multipart_bodies(CONTENT_TYPE, [BODY[:-12]]))
    with pytest.raises(MultipartError):
        list(multipart_bodies("multipart/related", [BODY]))


def test_a_part_larger_than_allowed_stops_the_reading_before_it_is_whole() -> None:
    def endless() -> Iterator[bytes]:
        yield b"--b0und\r\n\r\n"
        while True:  # a sender that never ends its part
            yield b"x" * 65536

    with pytest.raises(MultipartError, match="larger than"):
        list(multipart_bodies(CONTENT_TYPE, endless(), largest_part=1 << 20))
    assert list(multipart_bodies(CONTENT_TYPE, [BODY], largest_part=64)) == PARTS
