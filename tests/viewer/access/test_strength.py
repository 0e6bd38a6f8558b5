"""New passwords that are easy to guess are refused: breached ones, ones holding the user name, and ones
zxcvbn scores under the minimum, wherever a password is set (account creation, reset, own change)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from openaim.db import transaction
from tests.viewer.conftest import PASSWORD
from viewer.access import strength
from viewer.access.users import Role, add_user, check_password_rules, find_user, set_password


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("aaaaaaaaaaaa", "very weak"),
        ("password1234", "stolen in data breaches"),
        ("Password1234", "stolen in data breaches"),  # the list is matched without case
        ("1q2w3e4r5t6y7u8i9o", "stolen in data breaches"),  # on the list though zxcvbn scores it 4
        ("asdfghjkl;123", "straight rows of keys"),
        ("dr-tan-2026-12", "contain the user name"),
        ("123456789012", "weak"),
    ],
)
def test_easily_guessed_passwords_are_refused(password: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        check_password_rules(password, username="dr-tan")


@pytest.mark.parametrize(
    "password",
    [PASSWORD, "a long enough password", "a password of my own choosing", "typed by the admin", "x" * 1024],
)
def test_passwords_the_tests_and_people_use_are_accepted(password: str) -> None:
    if password == "x" * 1024:
        with pytest.raises(ValueError, match="very weak"):  # scored on its first 72 characters
            check_password_rules(password)
        return
    check_password_rules(password, username="radiologist")


def test_the_minimum_score_is_a_setting() -> None:
    weak_but_long = "asdfghjkl;123"
    with pytest.raises(ValueError):
        check_password_rules(weak_but_long)
    check_password_rules(weak_but_long, min_score=1)
    with pytest.raises(ValueError, match="stolen"):  # the breached list holds whatever the score
        check_password_rules("password1234", min_score=0)


def test_the_breached_list_ships_as_data() -> None:
    common = strength._common()
    assert len(common) > 150 and "password1234" in common
    assert all(len(entry) >= 12 and entry == entry.lower() for entry in common)


def test_add_user_and_set_password_apply_the_rules(db: sessionmaker[Session]) -> None:
    with transaction(db) as session:
        with pytest.raises(ValueError, match="very weak"):
            add_user(session, "dr-weak", "aaaaaaaaaaaa", {Role.RADIOLOGIST})
        user = find_user(session, "radiologist")
        assert user is not None
        with pytest.raises(ValueError, match="user name"):
            set_password(user, "radiologist's own password", must_change=False)


def test_changing_ones_password_to_a_weak_one_is_refused(radiologist: TestClient) -> None:
    page = radiologist.post(
        "/account/password",
        data={
            "current_password": PASSWORD,
            "new_password": "password1234",
            "repeat_password": "password1234",
        },
    )
    assert page.status_code == 400
    assert "That password is on a list of passwords stolen in data breaches" in page.text
