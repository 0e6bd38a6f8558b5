"""Seeded fuzzing: a few hundred hostile variants of real files, each uploaded through the platform's
STOW-RS route and, when stored, opened through every viewer path. Whatever the file, the platform answers:
no 500, no request left hanging, Orthanc still alive, and what it refuses it refuses with a reason.

The platform and a private Orthanc run for this module only (a file that got past the checks and crashed
Orthanc must not take the session's Orthanc down for other tests). OPENAIM_FUZZ_COUNT and
OPENAIM_FUZZ_SEED change the run; bench/bench_fuzz.py runs longer ones.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from openaim.db import make_engine, session_factory, transaction, upgrade
from openaim.settings import Settings
from orthanc import OrthancServer
from orthanc.launcher import free_port
from tests.viewer.hostile_files import Outcome, mutations, orthanc_is_up, sign_in, timed_run
from viewer.access.users import Role, add_user
from viewer.app import create_app

COUNT = int(os.environ.get("OPENAIM_FUZZ_COUNT", "300"))
SEED = int(os.environ.get("OPENAIM_FUZZ_SEED", "15"))
REQUEST_TIMEOUT_S = 20  # a request still unanswered after this is a hang
USER, PASSWORD = "fuzzer", "fuzz fuzz fuzz fuzz"
UPLOAD_ANSWERS = {200, 400, 413, 415, 422}


@pytest.fixture(scope="module")
def platform(
    tmp_path_factory: pytest.TempPathFactory, shared_data: Path
) -> Iterator[tuple[httpx.Client, bool]]:
    """A signed-in client of a viewer served by uvicorn (real timeouts) over a private Orthanc."""
    tmp = tmp_path_factory.mktemp("fuzz")
    server = OrthancServer(tmp / "orthanc", http_port=free_port(), stable_age=60)
    with server as orthanc:
        settings = Settings(data_dir=tmp / "data", cookie_secure=False, study_index_follow=False)
        upgrade(settings.resolved_database_url)
        with transaction(session_factory(make_engine(settings.resolved_database_url))) as db:
            add_user(db, USER, PASSWORD, {Role.ADMIN, Role.RADIOLOGIST})
        port = free_port()
        web = uvicorn.Server(uvicorn.Config(create_app(settings, orthanc), port=port, log_level="critical"))
        thread = threading.Thread(target=web.run, name="fuzzed viewer", daemon=True)
        thread.start()
        while not web.started:
            time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=REQUEST_TIMEOUT_S) as client:
            sign_in(client, USER, PASSWORD)
            alive = lambda: orthanc_is_up(orthanc.url, (orthanc.username, orthanc.password))  # noqa: E731
            yield client, alive  # type: ignore[misc]
        web.should_exit = True
        thread.join(10)


def _describe(outcome: Outcome) -> str:
    m = outcome.mutation
    return (
        f"#{m.index} {m.source} ({m.kind}): upload {outcome.upload} {outcome.reason[:80]!r} {outcome.answers}"
    )


def test_hostile_files_never_take_the_platform_down(
    platform: tuple[httpx.Client, object], shared_data: Path
) -> None:
    client, alive = platform
    started = time.monotonic()
    outcomes = timed_run(client, mutations(shared_data, COUNT, SEED), alive)  # type: ignore[arg-type]
    elapsed = time.monotonic() - started
    crashed = [o for o in outcomes if "ORTHANC DIED" in o.hangs]
    assert not crashed, f"Orthanc died after {_describe(crashed[0])}"
    assert len(outcomes) == COUNT
    hangs = [o for o in outcomes if o.hangs]
    assert not hangs, "requests hung:\n" + "\n".join(f"{o.hangs}: {_describe(o)}" for o in hangs)
    errors = [o for o in outcomes if o.upload >= 500 or any(code >= 500 for code in o.answers.values())]
    assert not errors, f"{len(errors)} files got a 5xx:\n" + "\n".join(_describe(o) for o in errors[:20])
    unexpected = [o for o in outcomes if o.upload not in UPLOAD_ANSWERS]
    assert not unexpected, "\n".join(_describe(o) for o in unexpected[:20])
    silent = [o for o in outcomes if o.upload != 200 and not o.reason.strip()]
    assert not silent, "refused without a reason:\n" + "\n".join(_describe(o) for o in silent[:20])
    accepted = sum(o.upload == 200 for o in outcomes)
    assert 0 < accepted < COUNT, f"{accepted} of {COUNT} accepted: the mutations test nothing"
    print(f"\n{COUNT} files, {accepted} stored, {COUNT - accepted} refused, {elapsed:.0f} s")
