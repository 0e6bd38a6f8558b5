"""Frames for the canvas viewport: every frame as Explicit VR Little Endian bytes, from a bounded cache.

Orthanc is only ever asked for frames as stored (``transfer-syntax=*``): Orthanc 1.10.1 with the GDCM
plugin segfaults when asked to transcode some JPEG 2000 files (MR2_J2KR), taking the archive down for
everyone. Compressed frames are therefore decoded here, with pydicom (``viewer.reading.frame_encoding``),
which also makes one request per frame whatever the encoding. For the one codec pydicom lacks (12-bit JPEG
extended) Orthanc's transcoding is the fallback; it is never used for a JPEG 2000 syntax.

The pixels of an instance UID never change, so decoded frames are kept in an LRU bounded in bytes, and a
whole series is loaded in the background: as soon as the study page names it (or the viewport asks for its
description), and when a frame of a series not loaded recently is missed. The background load asks Orthanc
for the series in one WADO-RS Retrieve Series answer (every file as stored, read as it arrives) rather than
frame by frame: one request instead of hundreds (Orthanc sends a 200-slice CT in ~0.2 s that way, and
serves ~190 frames/s one by one; bench/bench_viewer.py has the rest). A frame asked for while its series is
on its way waits for it; one the series answer did not bring (an unreadable file, a cache budget reached)
is then fetched by itself.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from pydicom import Dataset, dcmread

from viewer.archive.client import Archive, ArchiveError, NotInArchive
from viewer.reading.bytes_lru import BytesLRU
from viewer.reading.frame_encoding import (
    AS_STORED,
    BIG_ENDIAN,
    DEFAULT_MAX_FRAME_BYTES,
    EXPLICIT_LE,
    JPEG_EXTENDED,
    FrameError,
    FramePart,
    PixelFormat,
    Undecodable,
    frames_of_file,
    needs_decoding,
    parse_multipart,
    part_head,
    to_explicit_le,
)

log = logging.getLogger(__name__)

FORMATS_KEPT = 100_000
# Files whose headers are kept (a few KB each) for their series' description: counted by file, not by
# series, since one series may hold 3,000 slices and 32 of those would be gigabytes.
HEADERS_KEPT = 20_000
SERIES_REMEMBERED = 256  # series loaded recently: a missed frame of one of these is fetched alone


class NotLoadedWithSeries(Exception):
    """The series' background load ended without this frame: whoever waited fetches it by itself."""


def frame_location(instance: InstanceFrames, number: int) -> str:
    series = f"/dicomweb/studies/{instance.study_uid}/series/{instance.series_uid}"
    return f"{series}/instances/{instance.instance_uid}/frames/{number}"


async def series_bulk(
    source: FrameSource, instances: Sequence[InstanceFrames], boundary: str, lookahead: int = 8
) -> AsyncIterator[bytes]:
    """Every frame of the instances, in their order, as one multipart stream of bulk data parts.

    A few instances are loaded ahead of the one being sent. An instance that cannot be loaded is left
    out (a client fetches what it lacks frame by frame); its neighbours are still sent.
    """

    async def load(instance: InstanceFrames) -> list[bytes]:
        return await source.instance_frames(instance)

    ahead: deque[tuple[InstanceFrames, asyncio.Task[list[bytes]]]] = deque()
    queue = iter(instances)
    try:
        while True:
            while len(ahead) < lookahead and (instance := next(queue, None)) is not None:
                ahead.append((instance, asyncio.create_task(load(instance))))
            if not ahead:
                break
            instance, task = ahead.popleft()
            try:
                frames = await task
            except (FrameError, ArchiveError) as error:
                log.warning("series bulk data: an instance left out (%s)", error.__class__.__name__)
                continue
            for number, frame in enumerate(frames, start=1):
                yield part_head(boundary, frame_location(instance, number)) + frame + b"\r\n"
        yield f"--{boundary}--\r\n".encode()
    finally:  # the browser went away: stop loading for it
        for _, task in ahead:
            task.cancel()


@dataclass(frozen=True)
class InstanceFrames:
    """Where an instance lives and how many frames it has: what loading a whole series needs."""

    study_uid: str
    series_uid: str
    instance_uid: str
    frames: int


@dataclass
class SeriesLoad:
    """A series on its way from Orthanc in one answer: the frames requests wait for, and the one instance
    whose requests do not wait (the viewport's first image, asked for on its own at once)."""

    not_awaited: str = ""
    awaited: dict[tuple[str, int], asyncio.Future[bytes]] = field(default_factory=dict)
    headers: dict[str, Dataset] = field(default_factory=dict)  # by SOP Instance UID, as the files came
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def promise(self, key: tuple[str, int]) -> asyncio.Future[bytes]:
        if key not in self.awaited:
            self.awaited[key] = asyncio.get_running_loop().create_future()
        return self.awaited[key]


class FrameSource:
    """Frames in Explicit VR Little Endian: from the cache, or loaded from Orthanc once and shared by every
    request that wants them at the same time."""

    def __init__(
        self, archive: Archive, max_bytes: int, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    ) -> None:
        self.archive = archive
        self.max_frame_bytes = (
            max_frame_bytes  # no frame decoded here is larger (a header may claim anything)
        )
        self.cache: BytesLRU[tuple[str, int]] = BytesLRU(max_bytes)  # (instance UID, frame number)
        self._formats: OrderedDict[str, PixelFormat] = OrderedDict()
        self._loading: dict[tuple[str, int], asyncio.Future[bytes]] = {}
        self._series: dict[str, SeriesLoad] = {}  # series on their way, by Series Instance UID
        self._tasks: set[asyncio.Task[None]] = set()
        self._warmed: OrderedDict[str, None] = OrderedDict()  # series loaded recently, newest last
        self._headers: OrderedDict[str, dict[str, Dataset]] = OrderedDict()  # of series loaded lately

    def remember(self, instance_uid: str, fmt: PixelFormat) -> None:
        """Keep an instance's pixel format (learnt from series metadata) for decoding its frames."""
        self._formats[instance_uid] = fmt
        self._formats.move_to_end(instance_uid)
        while len(self._formats) > FORMATS_KEPT:
            self._formats.popitem(last=False)

    async def frames(
        self, study_uid: str, series_uid: str, instance_uid: str, numbers: Sequence[int]
    ) -> list[bytes]:
        found: dict[int, bytes] = {}
        waiting: dict[int, asyncio.Future[bytes]] = {}
        missing: list[int] = []
        for number in dict.fromkeys(numbers):
            key = (instance_uid, number)
            cached = self.cache.get(key)
            if cached is not None:
                found[number] = cached
            elif key in self._loading:
                waiting[number] = self._loading[key]
            elif (load := self._series.get(series_uid)) is not None and instance_uid != load.not_awaited:
                waiting[number] = load.promise(key)
            else:
                missing.append(number)
        if missing:
            self.warm(study_uid, series_uid)  # read ahead: the other frames will be asked for next
            found.update(await self._load(study_uid, series_uid, instance_uid, missing))
        for number, future in waiting.items():
            try:
                found[number] = await asyncio.shield(future)
            except NotLoadedWithSeries:
                found.update(await self._load(study_uid, series_uid, instance_uid, [number]))
        return [found[number] for number in numbers]

    async def instance_frames(self, instance: InstanceFrames) -> list[bytes]:
        """Every frame of an instance, for series bulk data. ``instance.frames`` is the header's Number of
        Frames (from Orthanc's index) and a hostile file may claim 2**31-1: beyond one frame it is trusted
        only as far as the cache holds the frames; otherwise the file is read and its frames are counted
        against its pixel data before anything is allocated (``frames_of_file``), then kept."""
        uid = instance.instance_uid
        if instance.frames == 1:
            return await self.frames(instance.study_uid, instance.series_uid, uid, [1])
        cached: list[bytes] = []
        while len(cached) < instance.frames and (frame := self.cache.get((uid, len(cached) + 1))) is not None:
            cached.append(frame)
        if len(cached) == instance.frames:
            return cached
        data = await self.archive.retrieve_instance(instance.study_uid, instance.series_uid, uid)
        budget = max(self.cache.max_bytes, self.max_frame_bytes)
        frames = (await asyncio.to_thread(frames_of_file, data, budget, self.max_frame_bytes)).frames
        for number, frame in enumerate(frames, start=1):
            self.cache.put((uid, number), frame)
        return frames

    async def _load(
        self, study_uid: str, series_uid: str, instance_uid: str, numbers: list[int]
    ) -> dict[int, bytes]:
        loop = asyncio.get_running_loop()
        futures = {number: loop.create_future() for number in numbers}
        for number, future in futures.items():
            self._loading[(instance_uid, number)] = future
        try:
            parts = await self._fetch_as_stored(study_uid, series_uid, instance_uid, numbers)
            loaded = await self._decode(study_uid, series_uid, instance_uid, numbers, parts)
        except BaseException as error:
            for future in futures.values():
                if not future.done():
                    future.set_exception(
                        error if isinstance(error, Exception) else FrameError("cancelled", 503)
                    )
                    future.exception()  # retrieved: a failure nobody waited for is not logged as lost
            raise
        finally:
            for number in numbers:
                self._loading.pop((instance_uid, number), None)
        for number, data in loaded.items():
            self.cache.put((instance_uid, number), data)
            futures[number].set_result(data)
        return loaded

    async def _decode(
        self, study_uid: str, series_uid: str, instance_uid: str, numbers: list[int], parts: list[FramePart]
    ) -> dict[int, bytes]:
        fmt = self._formats.get(instance_uid)  # known once the viewport asked for the series' description
        if not any(needs_decoding(part.transfer_syntax, fmt.photometric if fmt else None) for part in parts):
            return dict(zip(numbers, (part.data for part in parts), strict=True))
        fmt = fmt or await self._format(study_uid, series_uid, instance_uid)
        fmt.check_decodable(self.max_frame_bytes)  # before any decoder, or Orthanc, allocates it
        try:
            decoded = await asyncio.to_thread(_decode_all, parts, fmt, self.max_frame_bytes)
        except Undecodable as error:
            # Only the codec pydicom lacks goes to Orthanc: asking it to transcode corrupt data (or JPEG
            # 2000) risks crashing it for everyone.
            if not all(part.transfer_syntax == JPEG_EXTENDED for part in parts) or fmt.bits_stored <= 8:
                raise
            log.info("pydicom could not decode %s (%s); Orthanc transcodes it", instance_uid, error.reason)
            transcoded = await self._fetch(study_uid, series_uid, instance_uid, numbers, EXPLICIT_LE)
            decoded = [part.data for part in transcoded]
        return dict(zip(numbers, decoded, strict=True))

    async def _fetch_as_stored(
        self, study_uid: str, series_uid: str, instance_uid: str, numbers: list[int]
    ) -> list[FramePart]:
        """Orthanc 1.10 answers 500 to big-endian frames as stored: those are cut from the file here.
        (Asking Orthanc to transcode them crashed it once in a full test run, inside GDCM.)"""
        try:
            return await self._fetch(study_uid, series_uid, instance_uid, numbers, AS_STORED)
        except FrameError as error:
            if error.status_code not in (422, 502):
                raise
            stored = await self.archive.stored_transfer_syntax(instance_uid)
            if stored != BIG_ENDIAN:
                raise
            return await self.frames_from_file(study_uid, series_uid, instance_uid, numbers)

    async def frames_from_file(
        self, study_uid: str, series_uid: str, instance_uid: str, numbers: list[int]
    ) -> list[FramePart]:
        """Native frames cut from the instance's file, in the file's own transfer syntax."""
        data = await self.archive.retrieve_instance(study_uid, series_uid, instance_uid)
        try:
            ds = await asyncio.to_thread(dcmread, io.BytesIO(data))
            pixels = ds.get("PixelData") or b""
        except Exception as error:
            raise Undecodable(f"the file does not parse ({type(error).__name__})") from None
        fmt = PixelFormat.from_dataset(ds)
        if max(numbers) > fmt.frames:
            raise FrameError("Not found in the archive.", 404)
        fmt.check_decodable(self.max_frame_bytes)
        size = fmt.stored_frame_bytes
        if fmt.frames * size > len(pixels):
            raise Undecodable(
                f"the header declares {fmt.frames} frames of {size} bytes; the file holds "
                f"{len(pixels)} bytes of pixel data"
            )
        return [FramePart(BIG_ENDIAN, bytes(pixels[(n - 1) * size : n * size])) for n in numbers]

    async def _fetch(
        self, study_uid: str, series_uid: str, instance_uid: str, numbers: list[int], transfer_syntax: str
    ) -> list[FramePart]:
        response = await self.archive.fetch_frames(
            study_uid, series_uid, instance_uid, numbers, transfer_syntax
        )
        if response.status_code in (400, 404):
            raise FrameError("Not found in the archive.", 404)
        if response.status_code == 500:  # Orthanc answers, but cannot read (or transcode) this file's frames
            raise Undecodable("the archive could not read its frames")
        if response.status_code != 200:
            raise FrameError(f"The archive answered {response.status_code}.", 502)
        parts = parse_multipart(response.headers.get("content-type", ""), response.content)
        if len(parts) != len(numbers):
            raise FrameError(f"The archive answered {len(parts)} frames for {len(numbers)}.", 502)
        return parts

    async def _format(self, study_uid: str, series_uid: str, instance_uid: str) -> PixelFormat:
        ds = await self.archive.instance_metadata(study_uid, series_uid, instance_uid)
        if ds is None:
            raise FrameError("Not found in the archive.", 404)
        fmt = PixelFormat.from_dataset(ds)
        self.remember(instance_uid, fmt)
        return fmt

    def warm(self, study_uid: str, series_uid: str, first_instance: str = "") -> None:
        """Load a series' frames in the background, from one series answer, unless it is on its way or was
        loaded lately (then what left the cache is fetched frame by frame: loading the series again would
        only push out other series' frames).

        The viewport asks for ``first_instance`` at once, by itself: the series answer comes in Orthanc's
        order, and the first image should not wait behind the rest.
        """
        if series_uid in self._series or series_uid in self._warmed or self.cache.max_bytes == 0:
            return
        self._start(study_uid, series_uid, SeriesLoad(first_instance))

    def _start(self, study_uid: str, series_uid: str, load: SeriesLoad) -> None:
        self._series[series_uid] = load
        self._warmed[series_uid] = None
        self._warmed.move_to_end(series_uid)
        while len(self._warmed) > SERIES_REMEMBERED:
            self._warmed.popitem(last=False)
        task = asyncio.create_task(self._load_series(study_uid, series_uid, load), name="load a series")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load_series(self, study_uid: str, series_uid: str, load: SeriesLoad) -> None:
        try:
            await self._receive_series(study_uid, series_uid, load)
        except (ArchiveError, FrameError) as error:
            log.info("background load of a series stopped: %s", error)
            if not isinstance(error, NotInArchive):  # an outage: the next view may try again
                self._warmed.pop(series_uid, None)
        finally:  # a frame the answer did not bring is fetched by whoever waits for it
            del self._series[series_uid]
            self._keep_headers(series_uid, load.headers)
            load.done.set()
            for future in load.awaited.values():
                if not future.done():
                    future.set_exception(NotLoadedWithSeries())
                    future.exception()  # retrieved: its waiter may have gone

    async def _receive_series(self, study_uid: str, series_uid: str, load: SeriesLoad) -> None:
        """The series answer is read and its files parsed in a worker thread (off the event loop, which
        keeps serving); each file's frames are handed back to the loop as soon as they are decoded."""
        loop = asyncio.get_running_loop()
        enough = threading.Event()  # set by the loop once the cache budget is spent
        received = 0

        def arrived(instance_uid: str, frames: list[bytes], header: Dataset) -> None:
            nonlocal received
            load.headers[instance_uid] = header
            for number, frame in enumerate(frames, start=1):
                key = (instance_uid, number)
                self.cache.put(key, frame)
                future = load.awaited.get(key)
                if future is not None and not future.done():
                    future.set_result(frame)
                received += len(frame)
            if received >= self.cache.max_bytes:  # more would push out what just came
                enough.set()

        def read() -> None:
            budget = self.cache.max_bytes  # a file bigger than the whole cache is not worth holding
            with closing(self.archive.series_files(study_uid, series_uid, budget)) as files:
                for data in files:
                    if enough.is_set():
                        return
                    try:
                        found = frames_of_file(data, budget, self.max_frame_bytes)
                    except Exception as error:  # an unreadable file: its frames are fetched one by one
                        log.info("series load: a file left to per-frame retrieval (%s)", type(error).__name__)
                        continue
                    loop.call_soon_threadsafe(arrived, *found)

        try:
            await asyncio.to_thread(read)
        finally:  # cancelled (the app stops): the thread ends at the next file
            enough.set()

    def _keep_headers(self, series_uid: str, headers: dict[str, Dataset]) -> None:
        self._headers[series_uid] = headers
        self._headers.move_to_end(series_uid)
        while sum(len(kept) for kept in self._headers.values()) > HEADERS_KEPT:
            self._headers.popitem(last=False)  # the newest series too, if it alone is larger

    async def series_headers(self, series_uid: str) -> dict[str, Dataset]:
        """The header of every file the series' background load parsed (by SOP Instance UID), once it
        has ended; empty when no recent load kept them. The series' description is built from these
        rather than from Orthanc's series metadata, which reads every file a second time."""
        load = self._series.get(series_uid)
        if load is not None:
            await load.done.wait()
        return self._headers.get(series_uid, {})

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _decode_all(parts: list[FramePart], fmt: PixelFormat, max_frame_bytes: int) -> list[bytes]:
    return [
        to_explicit_le(part, fmt, max_frame_bytes)
        if needs_decoding(part.transfer_syntax, fmt.photometric)
        else part.data
        for part in parts
    ]


async def get_frame_source(request: Request) -> FrameSource:
    """The app's one frame source, made on first use for the app's current archive client."""
    state = request.app.state
    source: FrameSource | None = getattr(state, "frame_source", None)
    if source is None or source.archive is not state.archive:
        settings = state.settings
        source = FrameSource(
            state.archive,
            settings.viewer_frame_cache_mb * 1024 * 1024,
            settings.viewer_max_frame_mb * 1024 * 1024,
        )
        state.frame_source = source
    return source


Frames = Annotated[FrameSource, Depends(get_frame_source)]
