"""Benchmark: the whole inference pipeline against the raw model forward pass, same images, same run.

Starts a temporary Orthanc and database, installs a model package (the demo model by default), stores
real chest X-rays, then measures:
  1. the raw forward pass (preprocessed tensors already in memory) at batch 1 and at the best batch size;
  2. the pipeline: jobs for every image run by the service (Orthanc fetch, decode, preprocess, model, CAM,
     SR + SEG, STOW-RS, database) at the configured batch size;
  3. stable-study-to-result latency: one study at a time, from the moment Orthanc lists the StableStudy
     change (StableAge itself not counted) to the result row being committed.
Usage: .venv/bin/python -m bench.bench_inference [--model demo|densenet|PATH] [--images 48] [--latency 10]
                                           [--device auto|cpu|cuda] [--precision auto|fp32|bf16]

--model densenet: a CheXNet-sized DenseNet-121 (224 px, 14 findings) for when the published checkpoint is
not at hand: random weights, each finding's bias set so that it flags that finding on as many of these
images as the published CheXNet does (ref_prob >= 0.5 in labels.csv), then converted by the platform's own
CheXNet converter. The number of positive findings sizes the SR and the SEG, so the stand-in writes what
the real model would; the table prints positives per image.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from inference import catalog, jobs
from inference.catalog import Mode, ModelVersion
from inference.jobs import Job
from inference.manifest import Preprocessing
from inference.models import chexnet
from inference.models.densenet import DenseNet121
from inference.package import ModelPackage
from inference.results import Finding, InferenceResult
from inference.runtime.pixels import display_frame, read_dataset
from inference.runtime.predictor import Predictor
from inference.runtime.transform import to_model_input
from inference.service import InferenceService
from openaim.db import make_engine, session_factory, transaction, upgrade, utcnow
from openaim.seed import cxr_to_dicom, encode
from openaim.settings import REPO_ROOT, Settings
from orthanc import OrthancConnection, OrthancServer
from orthanc.launcher import free_port

DEMO_PACKAGE = REPO_ROOT / "inference" / "packages" / "openaim-demo-cxr"


def model_package(choice: str, folder: Path, pngs: list[Path], files: list[bytes]) -> Path:
    """The package to benchmark: the demo model, a DenseNet-121 stand-in written into ``folder``, a path."""
    if choice == "demo":
        return DEMO_PACKAGE
    if choice != "densenet":
        return Path(choice)
    checkpoint = folder / "densenet121-stand-in.pt"
    torch.save(densenet_stand_in(pngs, files).state_dict(), checkpoint)
    package = folder / "densenet121-package"
    chexnet.write_package(checkpoint, package, hashlib.sha256(checkpoint.read_bytes()).hexdigest())
    return package


def densenet_stand_in(pngs: list[Path], files: list[bytes]) -> DenseNet121:
    """Random weights; per finding, the bias puts the 0.5 threshold between the images the published CheXNet
    flags and the others, by rank, so each finding is flagged as often as the real model flags it here."""
    torch.manual_seed(0)
    model = DenseNet121(num_classes=len(chexnet.LABELS)).eval()
    preprocessing = Preprocessing.model_validate(chexnet.chexnet_manifest("0" * 64)["preprocessing"])
    inputs = torch.stack(
        [to_model_input(display_frame(read_dataset(data)), preprocessing)[0] for data in files]
    )
    with torch.inference_mode():
        logits = torch.cat([model(part) for part in inputs.split(8)])
    flags = reference_flags(pngs)
    with torch.no_grad():
        for index in range(len(chexnet.LABELS)):
            ranked = logits[:, index].sort(descending=True).values.tolist()
            flagged = int(flags[:, index].sum())
            above = ranked[flagged - 1] if flagged else ranked[0] + 1.0
            below = ranked[flagged] if flagged < len(ranked) else ranked[-1] - 1.0
            model.classifier.bias[index] -= (above + below) / 2
    return model


def reference_flags(pngs: list[Path]) -> np.ndarray:
    """(images, findings): whether the published CheXNet's probability is at least 0.5 (labels.csv)."""
    with (pngs[0].parent.parent / "labels.csv").open(newline="") as table:
        rows = {row["image"]: row for row in csv.DictReader(table)}
    return np.array(
        [[float(rows[png.name][f"ref_prob_{label}"]) >= 0.5 for label in chexnet.LABELS] for png in pngs]
    )


def model_inputs(files: list[bytes], preprocessing: Preprocessing) -> list[torch.Tensor]:
    return [to_model_input(display_frame(read_dataset(data)), preprocessing)[0] for data in files]


def chest_xray_pngs(shared_data: Path, count: int) -> list[Path]:
    """Full-size (1024x1024) NIH images first, as a real chest X-ray is large; small ones fill the rest."""
    folder = shared_data / "cxr14"
    return (sorted((folder / "full").glob("*.png")) + sorted((folder / "small").glob("*.png")))[:count]


@dataclass(frozen=True)
class CpuClock:
    """CPU seconds used so far: by this process (the service's threads and the model), and by every
    process on the machine (adds the result writers and Orthanc). Linux's /proc/stat; elsewhere None."""

    own: float
    machine: float | None

    @classmethod
    def now(cls) -> CpuClock:
        user, system, *_children = os.times()
        return cls(user + system, _machine_busy_seconds())

    def since(self, start: CpuClock) -> CpuClock:
        machine = None if self.machine is None or start.machine is None else self.machine - start.machine
        return CpuClock(self.own - start.own, machine)


def _machine_busy_seconds() -> float | None:
    stat = Path("/proc/stat")
    if not stat.exists():
        return None
    # cpu  user nice system idle iowait irq softirq steal ...: busy is all but idle, iowait and steal
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in stat.read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Rate:
    per_second: float
    cpu_ms: float  # CPU per image, this process
    machine_cpu_ms: float | None = None  # CPU per image, every process on the machine


def images_per_second(predictor: Predictor, tensors: list[torch.Tensor], batch: int) -> Rate:
    predictor.forward(torch.stack(tensors[:batch]))  # warm-up: first-call allocations, kernel choice
    start, cpu = time.perf_counter(), CpuClock.now()
    for first in range(0, len(tensors), batch):
        logits, _cams = predictor.forward(torch.stack(tensors[first : first + batch]))
        logits.float().cpu()
    elapsed, used = time.perf_counter() - start, CpuClock.now().since(cpu)
    return Rate(len(tensors) / elapsed, 1000 * used.own / len(tensors))


def raw_forward(predictor: Predictor, files: list[bytes]) -> dict[int, Rate]:
    tensors = model_inputs(files, predictor.manifest.preprocessing)
    return {batch: images_per_second(predictor, tensors, batch) for batch in (1, 2, 4, 8, 16)}


def store(orthanc: OrthancConnection, files: list[bytes]) -> list[tuple[str, str]]:
    uids = []
    with orthanc.client() as client:
        for data in files:
            dataset = read_dataset(data)
            response = client.post("/instances", content=data)
            response.raise_for_status()
            uids.append((str(dataset.StudyInstanceUID), str(dataset.SeriesInstanceUID)))
    return uids


def results(factory: sessionmaker[Session]) -> int:
    with factory() as db:
        return db.scalar(select(func.count()).select_from(InferenceResult)) or 0


def positives_per_image(factory: sessionmaker[Session]) -> float:
    """What sizes the SR and SEG: each positive finding adds its boxes and a heatmap segment."""
    with factory() as db:
        positives = db.scalar(select(func.count()).select_from(Finding).where(Finding.positive)) or 0
    return positives / max(results(factory), 1)


def pipeline(
    service: InferenceService, factory: sessionmaker[Session], version_id: int, uids: list[tuple[str, str]]
) -> Rate:
    with transaction(factory) as db:
        for study_uid, series_uid in uids:
            jobs.enqueue(db, study_uid, series_uid, version_id)
    before = results(factory)
    service.timings.reset()
    start, cpu = time.perf_counter(), CpuClock.now()
    while service.run_due():
        pass
    service.flush()
    elapsed, used = time.perf_counter() - start, CpuClock.now().since(cpu)
    done = results(factory) - before
    if done != len(uids):
        raise SystemExit(f"pipeline: only {done} of {len(uids)} jobs produced a result")
    machine = None if used.machine is None else 1000 * used.machine / len(uids)
    return Rate(len(uids) / elapsed, 1000 * used.own / len(uids), machine)


@dataclass
class Latencies:
    """Seconds from 'Orthanc lists the study as stable' to each moment the service stamps, one per study."""

    queued: list[float] = field(default_factory=list)  # its job created: the watcher's and router's part
    result: list[float] = field(default_factory=list)  # its result row committed: what the worklist shows
    dicom: list[float] = field(default_factory=list)  # its job done: SR and SEG stored in Orthanc


def latency(
    service: InferenceService, orthanc: OrthancConnection, factory: sessionmaker[Session], files: list[bytes]
) -> Latencies:
    """One study at a time, as a quiet reading room sends them. The service runs in this (the main) thread,
    as `openaim inference` runs it, and as the raw forward pass above ran: torch gives each thread
    that runs it its own OpenMP team, and a second team on these cores slows the forward pass."""
    latencies = Latencies()
    stop = threading.Event()
    failures: list[BaseException] = []

    def send_and_observe() -> None:
        try:
            for data in files:
                observe(orthanc, factory, data, latencies)
        except BaseException as error:  # re-raised below, in the main thread
            failures.append(error)
        finally:
            stop.set()

    observer = threading.Thread(target=send_and_observe, daemon=True)
    observer.start()
    service.run(stop)
    observer.join()
    if failures:
        raise failures[0]
    return latencies


def observe(orthanc: OrthancConnection, factory: sessionmaker[Session], data: bytes, into: Latencies) -> None:
    """Store one study, note when Orthanc calls it stable, and wait for the service to finish it."""
    with orthanc.client() as client:
        last = client.get("/changes", params={"last": ""}).json()["Last"]
        stored = client.post("/instances", content=data)
        stored.raise_for_status()
        study, series_uid = stored.json()["ParentStudy"], str(read_dataset(data).SeriesInstanceUID)
        stable_at = None
        while stable_at is None:  # the moment Orthanc publishes StableStudy for this study
            answer = client.get("/changes", params={"since": last, "limit": 100}).json()
            last = answer["Last"]
            if any(
                change["ChangeType"] == "StableStudy" and change["ID"] == study
                for change in answer["Changes"]
            ):
                stable_at = utcnow()
            else:
                time.sleep(0.005)
    job = None
    while job is None or job.finished_at is None:
        # the service stamps both moments itself: checking rarely costs no precision, and leaves the
        # two cores to the service
        time.sleep(0.05)
        with factory() as db:
            job = db.scalar(select(Job).where(Job.series_uid == series_uid))
    with factory() as db:
        created = db.scalar(select(InferenceResult.created_at).where(InferenceResult.job_id == job.id))
    assert created is not None
    into.queued.append(max((job.created_at - stable_at).total_seconds(), 0.0))
    into.result.append(max((created - stable_at).total_seconds(), 0.0))
    into.dicom.append(max((job.finished_at - stable_at).total_seconds(), 0.0))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="demo", help="demo (default), densenet (random-weight stand-in) or a package path"
    )
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--latency", type=int, default=10, help="studies for the latency measurement")
    parser.add_argument("--batch", type=int, default=8, help="the service's batch size")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="openaim-bench-") as folder:
        root = Path(folder)
        settings = Settings(
            data_dir=root / "data",
            inference_batch_size=args.batch,
            inference_device=args.device,
            inference_precision=args.precision,
        )
        upgrade(settings.resolved_database_url)
        engine = make_engine(settings.resolved_database_url)
        factory = session_factory(engine, settings.resolved_audit_key)
        pngs = chest_xray_pngs(settings.shared_data_dir, args.images + args.latency)
        files = [encode(cxr_to_dicom(png)) for png in pngs]
        batch_files, latency_files = files[: args.images], files[args.images :]
        with catalog.catalog_transaction(factory) as db:
            package_path = model_package(args.model, root, pngs, files)
            version = catalog.install(
                db, package_path, catalog.packages_dir(settings), "bench", tuple(settings.model_modules)
            )
            catalog.set_mode(db, version.model_id, version.version, Mode.SHADOW, "bench")
            version_id = version.id
        with factory() as db:
            installed = db.get(ModelVersion, version_id)
            assert installed is not None
            package = ModelPackage(catalog.manifest_of(installed), Path(installed.package_path))

        server = OrthancServer(root / "orthanc", http_port=free_port(), stable_age=1)
        orthanc = server.start()
        try:
            service = InferenceService(settings, orthanc, factory)
            service.wait_ready()  # a running service has its writer processes started long before
            predictor = service._predictor(installed)
            print(
                f"model: {package.manifest.id} {package.manifest.version}, device {predictor.device}, "
                f"{'bf16' if predictor.bf16 else 'fp32'}, "
                f"input {package.manifest.preprocessing.input_size}px, "
                f"torch threads {torch.get_num_threads()}, "
                f"polls /changes every {settings.inference_poll_seconds} s"
            )
            raw = raw_forward(predictor, batch_files)
            uids = store(orthanc, batch_files)
            throughput = pipeline(service, factory, version_id, uids)
            stages = service.timings.milliseconds_per_image()
            positives = positives_per_image(factory)
            service.timings.reset()
            waits = latency(service, orthanc, factory, latency_files)
            latency_stages = service.timings.milliseconds_per_image()
            service.close()
        finally:
            server.stop()
            engine.dispose()

    rows = speed_rows(raw, throughput, args.batch, args.images)
    rows += latency_rows(waits, single_ms=1000 / raw[1].per_second)
    rows += cpu_rows(raw, throughput)
    rows.append(("positive findings per image", f"{positives:.2f}", "each adds boxes and a SEG segment"))
    rows += [
        (f"  pipeline stage: {stage}", f"{ms:.1f} ms/img", "summed over threads")
        for stage, ms in stages.items()
    ]
    rows += [
        (f"  latency stage: {stage}", f"{ms:.1f} ms/img", "one study at a time")
        for stage, ms in latency_stages.items()
    ]
    width = max(len(row[0]) for row in rows)
    print(f"{'measure':<{width}}  {'value':>12}  note")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>12}  {note}")


Row = tuple[str, str, str]


def best(raw: dict[int, Rate]) -> int:
    return max(raw, key=lambda batch: raw[batch].per_second)


def speed_rows(raw: dict[int, Rate], pipeline: Rate, batch: int, images: int) -> list[Row]:
    top = raw[best(raw)]
    return [
        ("raw forward, batch 1", f"{raw[1].per_second:.1f} img/s", f"{1000 / raw[1].per_second:.1f} ms/img"),
        (
            f"raw forward, best batch ({best(raw)})",
            f"{top.per_second:.1f} img/s",
            f"{1000 / top.per_second:.1f} ms/img",
        ),
        (
            f"pipeline, batch {batch} ({images} images)",
            f"{pipeline.per_second:.1f} img/s",
            f"{100 * pipeline.per_second / top.per_second:.0f}% of best raw (goal 80%)",
        ),
    ]


def latency_rows(waits: Latencies, single_ms: float) -> list[Row]:
    p50 = statistics.median(waits.result)
    return [
        (
            f"stable-to-result latency p50 ({len(waits.result)} studies)",
            f"{1000 * p50:.0f} ms",
            f"{p50 * 1000 / single_ms:.1f}x single forward (goal < 2x)",
        ),
        ("stable-to-result latency p95", f"{1000 * percentile(waits.result, 0.95):.0f} ms", ""),
        (
            "  of which stable-to-queued (watcher) p50",
            f"{1000 * statistics.median(waits.queued):.0f} ms",
            "the rest: claim, fetch, decode, model, rows",
        ),
        (
            "stable-to-SR+SEG-stored latency p50 / p95",
            f"{1000 * statistics.median(waits.dicom):.0f} ms",
            f"p95 {1000 * percentile(waits.dicom, 0.95):.0f} ms",
        ),
    ]


def cpu_rows(raw: dict[int, Rate], pipeline: Rate) -> list[Row]:
    """Where the throughput goes: CPU per image. When the raw pass keeps every core busy, the pipeline can
    at most reach (the model's CPU) / (the pipeline's CPU) of it, however well its stages overlap."""
    cores = len(os.sched_getaffinity(0))
    top = raw[best(raw)]
    busy = top.cpu_ms * top.per_second / 1000 / cores
    rows = [
        (
            f"CPU per image: raw forward, best batch ({best(raw)})",
            f"{top.cpu_ms:.0f} ms",
            f"keeps {100 * busy:.0f}% of {cores} cores busy",
        ),
        (
            "CPU per image: pipeline, service process",
            f"{pipeline.cpu_ms:.0f} ms",
            "model, fetch, decode, rows",
        ),
    ]
    if pipeline.machine_cpu_ms is None:
        return rows
    ceiling = cores * 1000 / pipeline.machine_cpu_ms
    return [
        *rows,
        (
            "CPU per image: pipeline, all processes",
            f"{pipeline.machine_cpu_ms:.0f} ms",
            f"with the SR/SEG writers and Orthanc: {pipeline.machine_cpu_ms - pipeline.cpu_ms:.0f} ms",
        ),
        (
            f"pipeline ceiling at that CPU on {cores} cores",
            f"{ceiling:.1f} img/s",
            f"{100 * ceiling / top.per_second:.0f}% of best raw, with perfect overlap",
        ),
    ]


if __name__ == "__main__":
    main()
