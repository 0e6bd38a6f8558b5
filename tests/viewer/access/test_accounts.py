"""Account changes an admin makes (shared by the admin pages and the CLI): the last active admin stays,
disabled and reset accounts are signed out at once, a password an admin chose must be changed, and the
audit record says who did what to whom without a password."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from openaim.db import transaction
from viewer.access import accounts
from viewer.access.accounts import LastAdminError
from viewer.access.sessions import UserSession, find_session, start_session
from viewer.access.users import Role, add_user, check_password, find_user

PASSWORD = "correct horse battery staple"


@pytest.fixture
def people(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    with transaction(factory) as db:
        add_user(db, "boss", PASSWORD, {Role.ADMIN})
        add_user(db, "reader", PASSWORD, {Role.RADIOLOGIST})
    return factory


def _sessions(factory: sessionmaker[Session], username: str) -> int:
    with factory() as db:
        user = find_user(db, username)
        assert user is not None
        query = select(func.count()).select_from(UserSession).where(UserSession.user_id == user.id)
        return db.scalar(query) or 0


def _sign_in(factory: sessionmaker[Session], username: str) -> str:
    with transaction(factory) as db:
        user = find_user(db, username)
        assert user is not None
        token, _ = start_session(db, user, hours=1)
    return token


def test_the_last_active_admin_can_be_neither_disabled_nor_demoted(people: sessionmaker[Session]) -> None:
    for change in (
        lambda db: accounts.disable(db, "boss", "boss"),
        lambda db: accounts.set_roles(db, "boss", "boss", {Role.RADIOLOGIST}),
    ):
        with pytest.raises(LastAdminError, match="last active admin"), transaction(people) as db:
            change(db)
    with people() as db:
        boss = find_user(db, "boss")
        assert boss is not None and boss.active and boss.roles == {Role.ADMIN}


def test_a_disabled_admin_does_not_count_and_a_second_admin_frees_the_first(
    people: sessionmaker[Session],
) -> None:
    with transaction(people) as db:
        accounts.set_roles(db, "boss", "reader", {Role.RADIOLOGIST, Role.ADMIN})
        accounts.disable(db, "boss", "reader")
    with pytest.raises(LastAdminError), transaction(people) as db:
        accounts.disable(db, "boss", "boss")
    with transaction(people) as db:
        accounts.enable(db, "boss", "reader")
        change = accounts.set_roles(db, "reader", "boss", {Role.GOVERNANCE})
    assert change.audit_fields()["detail"] == {
        "subtype": "SecurityRolesChanged",
        "target": "boss",
        "change": "roles changed",
        "roles_before": ["admin"],
        "roles_after": ["governance"],
    }
    with people() as db:
        boss = find_user(db, "boss")
        assert boss is not None and boss.roles == {Role.GOVERNANCE}


def test_disabling_ends_every_session_at_once(people: sessionmaker[Session]) -> None:
    token = _sign_in(people, "reader")
    _sign_in(people, "reader")
    with transaction(people) as db:
        accounts.disable(db, "boss", "reader")
    assert _sessions(people, "reader") == 0
    with people() as db:
        assert find_session(db, token) is None
        assert check_password(db, "reader", PASSWORD) is None


def test_a_reset_password_signs_out_and_must_be_changed(people: sessionmaker[Session]) -> None:
    _sign_in(people, "reader")
    temporary = accounts.generated_password()
    with transaction(people) as db:
        change = accounts.reset_password(db, "boss", "reader", temporary)
    assert _sessions(people, "reader") == 0
    with people() as db:
        user = check_password(db, "reader", temporary)
        assert user is not None and user.must_change_password
        assert check_password(db, "reader", PASSWORD) is None
    fields = change.audit_fields()
    assert fields["username"] == "boss"
    assert temporary not in json.dumps(fields["detail"]) and PASSWORD not in json.dumps(fields["detail"])
    assert fields["detail"] == {
        "subtype": "UserSecurityAttributesChanged",
        "target": "reader",
        "change": "password reset",
    }


def test_an_added_account_must_change_its_password_and_refusals_change_nothing(
    people: sessionmaker[Session],
) -> None:
    with transaction(people) as db:
        accounts.add_account(db, "boss", "newbie", "New Person", {Role.REVIEWER}, "temporary-password-1")
    with people() as db:
        newbie = find_user(db, "newbie")
        assert newbie is not None and newbie.must_change_password and newbie.roles == {Role.REVIEWER}
    with pytest.raises(ValueError, match="at least 12"), transaction(people) as db:
        accounts.reset_password(db, "boss", "newbie", "short")
    with pytest.raises(accounts.AccountError, match="at least one role"), transaction(people) as db:
        accounts.set_roles(db, "boss", "newbie", set())
    with pytest.raises(accounts.UnknownUserError), transaction(people) as db:
        accounts.disable(db, "boss", "nobody")
    with people() as db:
        assert check_password(db, "newbie", "temporary-password-1") is not None
