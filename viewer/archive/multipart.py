"""Reading a multipart/related stream (RFC 2046) part by part, as it arrives: a series of 200 CT slices is
100 MB in one answer, and each instance can be used as soon as its part is whole."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from email.message import Message

HEADERS_AT_MOST = 65536  # bytes of part headers looked through for the blank line that ends them


class MultipartError(ValueError):
    """The body is not the multipart/related answer its headers announce."""


def boundary_of(content_type: str) -> bytes:
    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise MultipartError("no multipart boundary")
    return boundary.encode()


def multipart_bodies(
    content_type: str, chunks: Iterable[bytes], largest_part: int | None = None
) -> Iterator[bytes]:
    """Each part's body (its headers dropped), yielded as soon as the next delimiter has arrived.

    With ``largest_part``, a part that grows past that many bytes stops the reading (MultipartError)
    instead of being held in memory whole, whatever size the sender gives it.
    """
    delimiter = b"\r\n--" + boundary_of(content_type)
    buffer = bytearray(b"\r\n")  # so that the first delimiter, at the very start, looks like the others
    in_part = False  # whether the buffer starts with a part (after the first delimiter)
    searched = 0  # bytes already searched for a delimiter without finding one
    for chunk in chunks:
        buffer += chunk
        while (found := buffer.find(delimiter, searched)) >= 0:
            after = found + len(delimiter)
            if len(buffer) < after + 2:  # whether it closes the body ("--") has not arrived yet
                searched = found
                break
            if in_part:
                yield _body(buffer, found)
            if buffer[after : after + 2] == b"--":
                return  # the closing delimiter
            del buffer[:after]
            in_part, searched = True, 0
        else:
            searched = max(0, len(buffer) - len(delimiter))
        if largest_part is not None and len(buffer) > largest_part + HEADERS_AT_MOST:
            raise MultipartError(f"a part larger than {largest_part} bytes")
    raise MultipartError("the multipart body ended before its closing delimiter")


def _body(buffer: bytearray, end: int) -> bytes:
    """The body of the part at the start of ``buffer`` and ending at ``end``: what follows the blank
    line that closes its headers, copied once."""
    blank = buffer.find(b"\r\n\r\n", 0, min(end, HEADERS_AT_MOST))
    if blank < 0:
        raise MultipartError("a part without a blank line after its headers")
    with memoryview(buffer) as view:
        return bytes(view[blank + 4 : end])
