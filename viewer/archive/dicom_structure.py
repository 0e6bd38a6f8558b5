"""The structure of an uploaded DICOM file, checked from its bytes before any parser that could be hurt by it
reads it: the file meta information, the transfer syntax it names, every element's declared length against
the bytes that are there, and how deep sequences nest.

Why before Orthanc: Orthanc 1.10 (DCMTK) segfaults on a well-formed 38 KB file with a sequence nested 50 deep,
taking the archive down for every user, and pydicom reads a length that runs past the end of a file without
a word. The walk here allocates nothing per element and recurses at most ``MAX_SEQUENCE_DEPTH`` levels.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Final

from pydicom.datadict import dictionary_VR
from pydicom.uid import UID, AllTransferSyntaxes

MAX_SEQUENCE_DEPTH: Final = 16
"""Sequences within sequences. Real objects stay far below it (an enhanced MR's functional groups: 2; a TID
1500 SR's content tree: 6-8); Orthanc 1.10 crashed on 50. Deeper files are refused at upload."""

MAX_INFLATED_BYTES: Final = 1 << 30
"""A deflated dataset may inflate a thousandfold: inflating stops here."""

PREAMBLE: Final = 128
UNDEFINED: Final = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = (0xFFFE, 0xE000), (0xFFFE, 0xE00D), (0xFFFE, 0xE0DD)
PIXEL_DATA: Final = (0x7FE0, 0x0010)
DEFLATED: Final = "1.2.840.10008.1.2.1.99"
# Explicit VRs whose length takes 4 bytes after 2 reserved ones (PS3.5 7.1.2)
LONG_VRS: Final = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)


class MalformedDicom(ValueError):
    """Why the file is refused, in words an uploader can act on."""


@dataclass(frozen=True)
class Syntax:
    explicit: bool
    little: bool


def check_structure(data: bytes) -> str:
    """Walk the whole file; the transfer syntax UID it names is returned, or MalformedDicom raised."""
    if len(data) < PREAMBLE + 4 or data[PREAMBLE : PREAMBLE + 4] != b"DICM":
        raise MalformedDicom("no DICOM preamble and DICM prefix (a Part 10 file is expected)")
    start, syntax_uid = _file_meta(data, PREAMBLE + 4)
    uid = UID(syntax_uid)
    if not syntax_uid:
        raise MalformedDicom("the file meta information names no transfer syntax")
    if uid not in AllTransferSyntaxes:
        raise MalformedDicom(f"unknown transfer syntax {syntax_uid[:64]!r}")
    body = data[start:]
    if syntax_uid == DEFLATED:
        body = _inflate(body)
    _Walker(body, Syntax(uid.is_implicit_VR is False, uid.is_little_endian)).dataset(0, len(body), 0)
    return syntax_uid


def _file_meta(data: bytes, position: int) -> tuple[int, str]:
    """Group 0002 (always explicit VR little endian): where the dataset starts, and the transfer syntax."""
    syntax = ""
    while position + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, position)
        if group != 0x0002:
            break
        vr = data[position + 4 : position + 6]
        if vr in LONG_VRS:
            if position + 12 > len(data):
                raise MalformedDicom("the file meta information is cut short")
            length, header = struct.unpack_from("<L", data, position + 8)[0], 12
        else:
            length, header = struct.unpack_from("<H", data, position + 6)[0], 8
        end = position + header + length
        if length == UNDEFINED or end > len(data):
            raise MalformedDicom(f"file meta element (0002,{element:04X}) runs past the end of the file")
        if element == 0x0010:
            syntax = data[position + header : end].decode("ascii", "replace").strip("\x00 ")
        position = end
    return position, syntax


def _inflate(body: bytes) -> bytes:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(body, MAX_INFLATED_BYTES)
    except zlib.error as error:
        raise MalformedDicom(f"the deflated dataset does not inflate ({error})") from None
    if inflater.unconsumed_tail:
        raise MalformedDicom(f"the deflated dataset inflates past {MAX_INFLATED_BYTES} bytes")
    return inflated


class _Walker:
    def __init__(self, data: bytes, syntax: Syntax) -> None:
        self.data = data
        self.syntax = syntax
        self.order = "<" if syntax.little else ">"

    def dataset(self, position: int, end: int, depth: int, until_item_end: bool = False) -> int:
        """Elements from ``position`` to ``end`` (or to an Item Delimitation Item); where they stop."""
        while position < end:
            tag, vr, length, position = self._header(position, end)
            if tag == ITEM_END:
                if not until_item_end:
                    raise MalformedDicom("an item delimiter outside any item")
                return position
            if length == UNDEFINED:
                position = self._undefined(tag, vr, position, end, depth)
                continue
            if length > end - position:
                raise MalformedDicom(
                    f"element ({tag[0]:04X},{tag[1]:04X}) declares {length} bytes; {end - position} remain"
                )
            if vr == b"SQ":
                self._items(position, position + length, depth + 1)
            elif vr == b"UN" and _dictionary_vr(tag) == "SQ":  # read as the sequence it is (DCMTK does)
                _Walker(self.data, Syntax(explicit=False, little=True))._items(
                    position, position + length, depth + 1
                )
            position += length
        if until_item_end:
            raise MalformedDicom("an item of undefined length never ends")
        return position

    def _header(self, position: int, end: int) -> tuple[tuple[int, int], bytes, int, int]:
        if end - position < 8:
            raise MalformedDicom("the file ends inside an element's header")
        group, element = struct.unpack_from(self.order + "HH", self.data, position)
        tag = (group, element)
        if group == 0xFFFE:  # items and delimiters have no VR, in every syntax
            return tag, b"", struct.unpack_from(self.order + "L", self.data, position + 4)[0], position + 8
        if not self.syntax.explicit:
            length = struct.unpack_from(self.order + "L", self.data, position + 4)[0]
            return tag, _implicit_vr(tag, length), length, position + 8
        vr = bytes(self.data[position + 4 : position + 6])
        if not (vr.isalpha() and vr.isupper()):
            raise MalformedDicom(f"element ({group:04X},{element:04X}) has no valid VR ({vr!r})")
        if vr in LONG_VRS:
            if end - position < 12:
                raise MalformedDicom("the file ends inside an element's header")
            return tag, vr, struct.unpack_from(self.order + "L", self.data, position + 8)[0], position + 12
        return tag, vr, struct.unpack_from(self.order + "H", self.data, position + 6)[0], position + 8

    def _undefined(self, tag: tuple[int, int], vr: bytes, position: int, end: int, depth: int) -> int:
        if tag == PIXEL_DATA and vr in (b"OB", b"OW"):
            return self._fragments(position, end)
        if vr == b"SQ":
            return self._items(position, end, depth + 1, until_sequence_end=True)
        if (
            vr == b"UN"
        ):  # an unknown SQ of undefined length: its items are implicit VR little endian (PS3.5 6.2.2)
            walker = _Walker(self.data, Syntax(explicit=False, little=True))
            return walker._items(position, end, depth + 1, until_sequence_end=True)
        raise MalformedDicom(
            f"element ({tag[0]:04X},{tag[1]:04X}) has an undefined length but is no sequence"
        )

    def _items(self, position: int, end: int, depth: int, until_sequence_end: bool = False) -> int:
        if depth > MAX_SEQUENCE_DEPTH:
            raise MalformedDicom(f"sequences nest more than {MAX_SEQUENCE_DEPTH} deep")
        while position < end:
            tag, _, length, position = self._header(position, end)
            if tag == SEQUENCE_END:
                if not until_sequence_end:
                    raise MalformedDicom("a sequence delimiter in a sequence of defined length")
                return position
            if tag != ITEM:
                raise MalformedDicom(f"({tag[0]:04X},{tag[1]:04X}) where a sequence item belongs")
            if length == UNDEFINED:
                position = self.dataset(position, end, depth, until_item_end=True)
                continue
            if length > end - position:
                raise MalformedDicom(f"a sequence item declares {length} bytes; {end - position} remain")
            self.dataset(position, position + length, depth)
            position += length
        if until_sequence_end:
            raise MalformedDicom("a sequence of undefined length never ends")
        return position

    def _fragments(self, position: int, end: int) -> int:
        """Encapsulated pixel data: items of defined length, then the sequence delimiter."""
        while position < end:
            tag, _, length, position = self._header(position, end)
            if tag == SEQUENCE_END:
                return position
            if tag != ITEM or length == UNDEFINED:
                raise MalformedDicom("encapsulated pixel data holds something other than fragments")
            if length > end - position:
                raise MalformedDicom(
                    f"a pixel data fragment declares {length} bytes; {end - position} remain"
                )
            position += length
        raise MalformedDicom("the encapsulated pixel data never ends")


def _dictionary_vr(tag: tuple[int, int]) -> str:
    try:
        return str(dictionary_VR((tag[0] << 16) | tag[1]))
    except KeyError:  # private, or not in the dictionary
        return ""


def _implicit_vr(tag: tuple[int, int], length: int) -> bytes:
    """In implicit VR the dictionary says what an element is; an unknown one of undefined length can
    only be a sequence (PS3.5 7.5.1)."""
    if tag == PIXEL_DATA:
        return b"OW"
    vr = _dictionary_vr(tag)
    if vr == "SQ" or (not vr and length == UNDEFINED):
        return b"SQ"
    return vr.split(" ")[0].encode()[:2] or b"UN"
