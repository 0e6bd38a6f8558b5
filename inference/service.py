"""The inference service: watch Orthanc, route, and run due jobs in batches until told to stop.

One loop, three steps: ``poll`` (new stable studies become jobs), ``claim`` (due jobs, with a lease), and
``run`` (fetch, decode, predict as one batch per model version, write SR + SEG to Orthanc, results to the
database). Errors are sorted by what they mean: an image a model cannot read ends the job ``not_applicable``
with the reason; an SR or SEG that cannot be built (it would fail again) ends ``failed`` at once
with its reason; an archive that does not answer is retried with back-off; anything else is retried too and,
if it keeps happening, ends ``failed`` with its reason. One job's failure never stops the others.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import torch
from PIL import Image
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from inference import catalog, jobs, reconcile
from inference.archive import ArchiveRefused, ArchiveUnavailable, InferenceArchive, NotInArchive
from inference.catalog import ModelVersion
from inference.dicom_results.algorithm import Algorithm
from inference.dicom_results.finding import FindingResult
from inference.dicom_results.uids import ResultUids
from inference.jobs import ClaimedJob, JobState
from inference.package import ModelPackage
from inference.result_writer import ResultNotBuildable, ResultToWrite, ResultWriters, without_pixels
from inference.results import Finding, InferenceResult
from inference.router import Candidate
from inference.runtime.pixels import (
    UnreadableImage,
    check_image,
    display_frame,
    read_dataset,
    representative_frame,
)
from inference.runtime.predictor import FindingPrediction, Prediction, Predictor
from inference.runtime.transform import Crop, to_model_input
from inference.timings import StageTimings
from inference.watcher import poll
from openaim import audit
from openaim.audit import Action, EventType
from openaim.db import make_engine, session_factory, transaction
from openaim.settings import Settings
from orthanc import OrthancConnection

log = logging.getLogger("openaim.inference")

# An idle service reads /changes every poll, but looks for due jobs (retries whose back-off has passed,
# jobs whose worker died, jobs another service queued) only this often: half the cost of an idle poll.
IDLE_CLAIM_SECONDS = 1.0
# After an archive outage the next sweep comes this soon (or when already due): while Orthanc is down, the
# poll fails first and no sweep is tried; one that fails half-way is not repeated at every poll.
SWEEP_AFTER_OUTAGE_SECONDS = 2.0
# torch's own choice (one per physical core), read before any service lowers it for a forward pass
TORCH_THREADS = torch.get_num_threads()


@dataclass
class PreparedJob:
    job: ClaimedJob
    source: pydicom.Dataset
    frame: int | None  # 0-based frame of a multi-frame source; None for a single frame
    tensor: torch.Tensor
    crop: Crop


class InferenceService:
    def __init__(
        self, settings: Settings, connection: OrthancConnection, factory: sessionmaker[Session]
    ) -> None:
        self.settings = settings
        self.factory = factory
        self.archive = InferenceArchive(connection)
        self._predictors: dict[int, Predictor] = {}
        self.timings = StageTimings()
        # Fetching and decoding wait on Orthanc: a few at once. Writing results (SR, SEG, STOW) overlaps
        # the next batch's forward pass, in worker processes (see result_writer), one thread waiting on
        # each; one batch at most is in writing, so memory stays bounded.
        self._readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="inference-read")
        writers = settings.inference_result_writers
        self._result_writers = ResultWriters(connection, writers)
        self._writers = ThreadPoolExecutor(max_workers=writers, thread_name_prefix="inference-write")
        self._writing: list[Future[None]] = []
        self._next_idle_claim = 0.0  # time.monotonic() from which an idle step claims again
        self._next_sweep = 0.0  # time.monotonic() of the next reconciliation sweep: the first step runs one

    def wait_ready(self) -> None:
        """Start the result writer processes now rather than with the first result."""
        self._result_writers.wait_ready()

    def flush(self) -> None:
        """Wait until every result handed to the writer is stored."""
        for future in self._writing:
            future.result()
        self._writing.clear()

    def close(self) -> None:
        torch.set_num_threads(TORCH_THREADS)  # process-wide: leave it as found for whatever runs next
        self.flush()
        self._readers.shutdown()
        self._writers.shutdown()
        self._result_writers.close()
        self.archive.close()

    def run(self, stop: threading.Event) -> None:
        """Poll and run until ``stop`` is set; idle between polls only when there was nothing to do."""
        self.wait_ready()
        log.info("inference service started")
        while not stop.is_set():
            try:
                busy = self.step()
            except ArchiveUnavailable as error:
                log.warning("archive unavailable: %s", error)
                busy = False
            except Exception:  # the loop must outlive any single bug; the job-level handlers carry reasons
                log.exception("inference loop error")
                busy = False
            if not busy:
                stop.wait(self.settings.inference_poll_seconds)
        log.info("inference service stopped")

    def step(self) -> bool:
        """One poll and one batch; True when there was work. The batch is claimed at once when the poll
        read changes (they may have queued jobs) or the last claim found work, else once a second."""
        try:
            changes = poll(self.archive, self.factory, self._candidates) + self._sweep_when_due()
        except ArchiveUnavailable:
            # Orthanc may be restarting, and a restart loses the StableStudy of every study still settling
            # (reconcile.py): sweep soon after it answers again rather than a whole interval later.
            self._next_sweep = min(self._next_sweep, time.monotonic() + SWEEP_AFTER_OUTAGE_SECONDS)
            raise
        ran = self.run_due() if changes or time.monotonic() >= self._next_idle_claim else 0
        if not ran:
            self.flush()
        return bool(changes or ran)

    def _sweep_when_due(self) -> int:
        """The reconciliation sweep (reconcile.py) at the first step and every inference_reconcile_seconds;
        how many series it routed."""
        if time.monotonic() < self._next_sweep:
            return 0
        report = reconcile.sweep(self.archive, self.factory, self._candidates)
        self._next_sweep = time.monotonic() + self.settings.inference_reconcile_seconds
        return report.series_routed

    def _candidates(self, db: Session) -> list[Candidate]:
        return [
            Candidate(
                version.id,
                f"{version.model_id} {version.version}",
                tuple(catalog.manifest_of(version).selectors),
            )
            for version in catalog.enabled_versions(db)
        ]

    def run_due(self) -> int:
        """Claim one batch of due jobs and run it; returns how many jobs were claimed."""
        claimed = jobs.claim(
            self.factory,
            limit=self.settings.inference_batch_size,
            lease_seconds=self.settings.inference_lease_seconds,
            max_attempts=self.settings.inference_max_attempts,
        )
        self._next_idle_claim = 0.0 if claimed else time.monotonic() + IDLE_CLAIM_SECONDS
        by_version: dict[int, list[ClaimedJob]] = defaultdict(list)
        for job in claimed:
            by_version[job.model_version_id].append(job)
        for version_id, group in by_version.items():
            self._run_group(version_id, group)
        return len(claimed)

    def _run_group(self, version_id: int, group: list[ClaimedJob]) -> None:
        with self.factory() as db:
            version = db.get(ModelVersion, version_id)
        if version is None or version.mode == catalog.Mode.OFF.value:
            for job in group:
                self._end(job, JobState.NOT_APPLICABLE, "the model version was switched off before it ran")
            return
        try:
            predictor = self._predictor(version)
        except Exception as error:
            for job in group:
                self._retry(job, f"the model could not be loaded ({error})")
            return
        read = self._readers.map(lambda job: self._prepare(job, predictor), group)
        prepared = [item for item in read if item is not None]
        if not prepared:
            return
        if predictor.device.type == "cpu":
            torch.set_num_threads(model_threads(TORCH_THREADS, self._writers_busy()))
        try:
            with self.timings.measure("model + CAM", count=len(prepared)):
                predictions = predictor.predict([item.tensor for item in prepared])
        except Exception as error:
            for item in prepared:
                self._retry(item.job, f"the model failed ({error.__class__.__name__}: {error})")
            return
        results = list(zip(prepared, predictions, strict=True))
        try:
            with self.timings.measure("result rows", count=len(results)):
                self._record(version, predictor, results)
        except Exception as error:
            for item in prepared:
                self._retry(item.job, f"the result could not be saved ({error.__class__.__name__}: {error})")
            return
        self.flush()  # the previous batch's DICOM first: at most one batch is being written
        self._writing += [
            self._writers.submit(self._deliver, version, predictor, item, prediction)
            for item, prediction in results
        ]

    def _writers_busy(self) -> int:
        pending = sum(not future.done() for future in self._writing)
        return min(pending, self.settings.inference_result_writers)  # the rest wait for a writer

    def _predictor(self, version: ModelVersion) -> Predictor:
        if version.id not in self._predictors:
            package = ModelPackage(catalog.manifest_of(version), Path(version.package_path))
            self._predictors[version.id] = Predictor.load(
                package,
                device=self.settings.inference_device,
                precision=self.settings.inference_precision,
                allowed_modules=tuple(self.settings.model_modules),
            )
        return self._predictors[version.id]

    def _prepare(self, job: ClaimedJob, predictor: Predictor) -> PreparedJob | None:
        try:
            with self.timings.measure("fetch"):
                series = self.archive.series_by_uid(job.series_uid)
                if series is None:
                    self._end(job, JobState.NOT_APPLICABLE, "the series is no longer in the archive")
                    return None
                data = self.archive.instance_file(series.first_instance_id)
            with self.timings.measure("decode + preprocess"):
                source = read_dataset(data)
                check_image(source)
                frame = representative_frame(source)
                preprocessing = predictor.manifest.preprocessing
                image = display_frame(
                    source, frame, voi=preprocessing.voi, invert_monochrome1=preprocessing.invert_monochrome1
                )
                tensor, crop = to_model_input(image, preprocessing)
        except UnreadableImage as error:
            self._end(job, JobState.NOT_APPLICABLE, error.reason)
            return None
        except NotInArchive:
            self._end(job, JobState.NOT_APPLICABLE, "the series is no longer in the archive")
            return None
        except ArchiveUnavailable as error:
            self._retry(job, str(error))
            return None
        except Exception as error:
            self._retry(job, f"{error.__class__.__name__}: {error}")
            return None
        multi_frame = int(source.get("NumberOfFrames", 1) or 1) > 1
        return PreparedJob(job, source, frame if multi_frame else None, tensor, crop)

    def _deliver(
        self, version: ModelVersion, predictor: Predictor, item: PreparedJob, prediction: Prediction
    ) -> None:
        """The portable DICOM record of a result whose row is saved; the job is done only when both exist.
        A re-run after a crash finds the row and stores the same (deterministic) instances again, so
        nothing is duplicated."""
        try:
            uids = ResultUids.of(item.job.series_uid, version.device_uid)
            with self.timings.measure("heatmaps to image grid"):
                findings = finding_results(predictor, item, prediction)
            triage = prediction.triage.value if prediction.triage else None
            frame = None if item.frame is None else item.frame + 1
            algorithm = Algorithm.of(predictor.manifest)
            result = ResultToWrite(without_pixels(item.source), findings, triage, algorithm, uids, frame)
            written = self._result_writers.write(result)
            for stage, seconds in written.seconds.items():
                self.timings.add(stage, seconds)
            with self.timings.measure("job done + audit"):
                self._done(version, item, prediction, seg_stored=written.seg_stored)
        except (ResultNotBuildable, ArchiveRefused) as error:
            self._end(item.job, JobState.FAILED, str(error))  # it would fail the same way every attempt
        except ArchiveUnavailable as error:
            self._retry(item.job, str(error))
        except Exception as error:
            log.exception("job %s: writing the result failed", item.job.id)
            self._retry(item.job, f"{error.__class__.__name__}: {error}")

    def _record(
        self, version: ModelVersion, predictor: Predictor, results: list[tuple[PreparedJob, Prediction]]
    ) -> None:
        """A batch's result rows, in one transaction, as soon as the model has spoken: they are what readers
        and the worklist see, so they wait for neither the DICOM objects nor the previous batch's."""
        job_ids = [item.job.id for item, _prediction in results]
        with transaction(self.factory) as db:
            saved = set(db.scalars(select(InferenceResult.job_id).where(InferenceResult.job_id.in_(job_ids))))
            for item, prediction in results:
                if item.job.id not in saved:  # a re-run after a crash: the row is already there
                    uids = ResultUids.of(item.job.series_uid, version.device_uid)
                    db.add(result_row(version, predictor, item, prediction, uids))

    def _done(
        self, version: ModelVersion, item: PreparedJob, prediction: Prediction, seg_stored: bool
    ) -> None:
        job = item.job
        with transaction(self.factory) as db:
            if not seg_stored:  # e.g. a multi-frame source a SEG cannot be placed on
                db.execute(
                    update(InferenceResult).where(InferenceResult.job_id == job.id).values(seg_uid=None)
                )
            jobs.finish(db, job.id, JobState.DONE)
            audit.append(  # in the job's transaction: a finished job always has its event
                db,
                EventType.AI_INFERENCE,
                action=Action.EXECUTE,
                object_uid=job.study_uid,
                source="inference",
                detail={
                    "job": job.id,
                    "model_id": version.model_id,
                    "version": version.version,
                    "device_uid": version.device_uid,
                    "weights_sha256": version.weights_sha256,
                    "triage": prediction.triage.value if prediction.triage else None,
                },
            )
        log.info("job %s done (%s %s)", job.id, version.model_id, version.version)

    def _end(self, job: ClaimedJob, state: JobState, reason: str) -> None:
        with transaction(self.factory) as db:
            jobs.finish(db, job.id, state, reason)
        log.info("job %s %s: %s", job.id, state.value, reason)

    def _retry(self, job: ClaimedJob, reason: str) -> None:
        with transaction(self.factory) as db:
            state = jobs.retry_later(
                db,
                job,
                reason,
                max_attempts=self.settings.inference_max_attempts,
                base_seconds=self.settings.inference_retry_seconds,
            )
        log.warning("job %s attempt %s: %s (now %s)", job.id, job.attempt, reason, state.value)


def model_threads(threads: int, writers_busy: int) -> int:
    """Intra-op threads for a forward pass on the CPU: the cores that no busy result writer is using.

    Each writer process keeps a core busy building an SR. A forward pass that still used every core then
    had OpenMP threads spin-waiting at each barrier for a peer that had no core: on 2 cores, the service
    process used 274 ms of CPU an image with all threads and 141-157 ms this way, and the whole pipeline
    went from 2.8 to 4.4-4.9 images a second (bench/bench_inference.py --model densenet). When nothing is
    being written (a quiet reading room, one study at a time) every core goes to the model, for the shortest
    wait.
    """
    return max(1, threads - writers_busy)


def source_boxes(
    predictor: Predictor, item: PreparedJob, finding: FindingPrediction
) -> list[tuple[float, float, float, float]]:
    """A finding's boxes in the source image's pixels, clipped to the image."""
    size = predictor.manifest.preprocessing.input_size
    rows, columns = float(item.source.Rows), float(item.source.Columns)
    boxes = []
    for x0, y0, x1, y1 in finding.boxes:
        (sx0, sy0), (sx1, sy1) = item.crop.to_source(np.array([[x0, y0], [x1, y1]], dtype=float), size)
        boxes.append((max(sx0, 0.0), max(sy0, 0.0), min(sx1, columns), min(sy1, rows)))
    return boxes


def finding_results(predictor: Predictor, item: PreparedJob, prediction: Prediction) -> list[FindingResult]:
    """Model-input findings mapped onto the source image: boxes in its pixels, heatmaps on its grid."""
    rows, columns = int(item.source.Rows), int(item.source.Columns)
    results = []
    for finding in prediction.findings:
        output = predictor.manifest.output(finding.label)
        boxes = source_boxes(predictor, item, finding)
        heatmap = None if finding.heatmap is None else item.crop.paint(finding.heatmap, rows, columns)
        results.append(
            FindingResult(
                label=finding.label,
                display_name=output.display_name,
                code=output.code,
                probability=finding.probability,
                threshold=finding.threshold,
                positive=finding.positive,
                boxes=boxes,
                heatmap=heatmap,
            )
        )
    return results


def result_row(
    version: ModelVersion, predictor: Predictor, item: PreparedJob, prediction: Prediction, uids: ResultUids
) -> InferenceResult:
    row = InferenceResult(
        job_id=item.job.id,
        study_uid=item.job.study_uid,
        series_uid=item.job.series_uid,
        sop_instance_uid=str(item.source.SOPInstanceUID),
        model_version_id=version.id,
        triage=prediction.triage.value if prediction.triage else None,
        sr_uid=uids.sr,
        seg_uid=uids.seg if any(finding.heatmap is not None for finding in prediction.findings) else None,
    )
    for finding in prediction.findings:
        boxes = source_boxes(predictor, item, finding)
        row.findings.append(
            Finding(
                label=finding.label,
                display_name=predictor.manifest.output(finding.label).display_name,
                probability=finding.probability,
                threshold=finding.threshold,
                positive=finding.positive,
                boxes_json=json.dumps([[round(value, 1) for value in box] for box in boxes]),
                heatmap_png=_png(finding.heatmap) if finding.heatmap is not None else None,
                heatmap_region=item.crop.as_text() if finding.heatmap is not None else None,
            )
        )
    return row


def _png(heatmap: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    # the fastest zlib level: 4x faster than the default (1.3 vs 5 ms a map) for 30% more bytes (12 KB)
    Image.fromarray(np.round(heatmap * 255).astype(np.uint8), mode="L").save(
        buffer, format="PNG", compress_level=1
    )
    return buffer.getvalue()


@contextmanager
def in_background(settings: Settings, connection: OrthancConnection) -> Iterator[None]:
    """The inference service in a background thread (when enabled), stopped and joined on exit."""
    if not settings.inference_enabled:
        yield
        return
    engine = make_engine(settings.resolved_database_url)
    service = InferenceService(settings, connection, session_factory(engine, settings.resolved_audit_key))
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), name="inference", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=60)
        service.close()
        engine.dispose()
