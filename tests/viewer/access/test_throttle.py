"""Guessing passwords: a (username, address) pair locks after a few failures; wide limits per username and
per address spare the pairs that signed in before. Counted in the database, so every process agrees."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from openaim.audit import AuditEvent
from openaim.settings import Settings
from tests.viewer.conftest import BASE_URL, PASSWORD, csrf_token
from viewer.access import throttle

GENERIC = "Unknown user name or wrong password."


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'openaim.db'}",
        study_index_follow=False,
        signin_max_failures=5,
        signin_lockout_s=3.0,
        signin_username_max_failures=8,
        signin_source_max_failures=8,
    )


def _attempt(client: TestClient, username: str, password: str) -> int:
    client.cookies.clear()
    token = csrf_token(client.get("/signin").text)
    response = client.post(
        "/signin",
        data={"username": username, "password": password, "csrf_token": token},
        follow_redirects=False,
    )
    if response.status_code == 401:
        assert response.text.split('role="alert">')[1].split("<")[0] == GENERIC
    return response.status_code


def _from(client: TestClient, address: str) -> TestClient:
    return TestClient(client.app, base_url=BASE_URL, client=(address, 50000))


def test_thirty_wrong_passwords_then_the_right_one_is_refused_until_the_lock_ends(
    settings: Settings, client: TestClient, db: sessionmaker[Session]
) -> None:
    settings.signin_lockout_s = 900  # the default period: nothing in this test waits it out
    assert [_attempt(client, "radiologist", f"guess number {n}") for n in range(30)] == [401] * 30
    assert _attempt(client, "radiologist", PASSWORD) == 401
    with db() as session:
        events = list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))
    lockouts = [row for row in events if row.event_type == "SecurityAlert"]
    assert [(row.username, row.source) for row in lockouts] == [("radiologist", "testclient")]
    refusals = [row for row in events if throttle.Refusal.PAIR_LOCKED.value in row.detail]
    assert len(refusals) == 1 + 25 + 1  # the lockout alert, then every attempt after the fifth failure


def test_after_the_lock_period_the_right_password_signs_in_and_clears_the_count(client: TestClient) -> None:
    assert [_attempt(client, "radiologist", f"guess number {n}") for n in range(5)] == [401] * 5
    assert _attempt(client, "radiologist", PASSWORD) == 401
    time.sleep(3.1)
    assert _attempt(client, "radiologist", PASSWORD) == 303
    # Cleared: four more failures do not lock the pair again.
    assert [_attempt(client, "radiologist", f"again {n}") for n in range(4)] == [401] * 4
    assert _attempt(client, "radiologist", PASSWORD) == 303


def test_a_lock_set_from_one_address_does_not_lock_the_user_out_elsewhere(client: TestClient) -> None:
    attacker = _from(client, "203.0.113.9")
    assert [_attempt(attacker, "radiologist", f"guess {n}") for n in range(6)] == [401] * 6
    assert _attempt(attacker, "radiologist", PASSWORD) == 401
    assert _attempt(client, "radiologist", PASSWORD) == 303


def test_guessing_from_many_addresses_spares_only_addresses_the_user_signed_in_from(
    client: TestClient,
) -> None:
    assert _attempt(client, "radiologist", PASSWORD) == 303  # the reader's usual workstation
    for n in range(8):  # one guess from each of eight addresses: no pair lock, the username's limit
        assert _attempt(_from(client, f"198.51.100.{n}"), "radiologist", "a guess") == 401
    assert _attempt(_from(client, "198.51.100.200"), "radiologist", PASSWORD) == 401
    assert _attempt(client, "radiologist", PASSWORD) == 303
    assert _attempt(_from(client, "198.51.100.201"), "reviewer", PASSWORD) == 303  # other users unaffected


def test_one_address_trying_many_usernames_is_refused_for_new_ones(client: TestClient) -> None:
    assert _attempt(client, "reviewer", PASSWORD) == 303
    for n in range(8):
        assert _attempt(client, f"name-{n}", "a guess") == 401
    assert _attempt(client, "radiologist", PASSWORD) == 401
    assert _attempt(client, "reviewer", PASSWORD) == 303


def test_the_count_is_kept_in_the_database_for_every_process(db: sessionmaker[Session]) -> None:
    policy = throttle.Policy.of(Settings(signin_max_failures=3))
    for _ in range(2):
        assert throttle.start_attempt(db, policy, "radiologist", "10.0.0.1")[1] is None
        assert not throttle.failed(db, policy, "radiologist", "10.0.0.1")
    assert throttle.start_attempt(db, policy, "radiologist", "10.0.0.1")[1] is None
    assert throttle.failed(db, policy, "radiologist", "10.0.0.1")  # the third locks the pair
    locked = throttle.start_attempt(db, policy, "radiologist", "10.0.0.1")[1]
    assert locked is throttle.Refusal.PAIR_LOCKED
    assert throttle.start_attempt(db, policy, "radiologist", "10.0.0.2")[1] is None


def test_guesses_sent_in_parallel_get_no_more_tries_than_the_lock_allows(db: sessionmaker[Session]) -> None:
    policy = throttle.Policy.of(Settings(signin_max_failures=5))
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(
            pool.map(lambda _: throttle.start_attempt(db, policy, "admin", "203.0.113.7"), range(40))
        )
    checked = [attempt for attempt, refused in answers if refused is None]
    assert len(checked) == 5  # the other 35 were refused before any password was checked
