"""An action's audit event is appended in the action's own transaction (issue 15 item 7): they commit
together or not at all, and appenders in many transactions at once still make one chain, in order."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from openaim import audit
from openaim.audit import Action, AuditEvent, AuditKeyMissingError, EventType
from openaim.db import session_factory, transaction


def _count(factory: sessionmaker[Session]) -> int:
    with factory() as db:
        return db.scalar(select(func.count()).select_from(AuditEvent)) or 0


def test_an_event_appended_in_a_transaction_that_fails_is_not_kept(factory: sessionmaker[Session]) -> None:
    with pytest.raises(RuntimeError, match="the action failed"), transaction(factory) as db:
        audit.append(db, EventType.AI_FEEDBACK, action=Action.CREATE, detail={"feedback": 1})
        raise RuntimeError("the action failed")
    assert _count(factory) == 0
    with transaction(factory) as db:
        audit.append(db, EventType.AI_FEEDBACK, action=Action.CREATE, detail={"feedback": 1})
    with factory() as db:
        assert audit.verify(db).ok and _count(factory) == 1


def test_appenders_in_many_transactions_at_once_make_one_chain(factory: sessionmaker[Session]) -> None:
    """Each transaction writes first (as an action does) or only reads, then appends; another thread
    appends in transactions of its own. None fails, and the chain links every row in id order."""
    errors: list[BaseException] = []

    def in_transactions(writes_first: bool) -> None:
        try:
            for number in range(15):
                with transaction(factory) as db:
                    if writes_first:
                        audit.append(db, EventType.QUERY, action=Action.EXECUTE, detail={"first": number})
                    db.scalar(select(func.count()).select_from(AuditEvent))
                    audit.append(db, EventType.QUERY, action=Action.EXECUTE, detail={"n": number})
        except BaseException as error:  # reported below: a thread's failure would pass unseen
            errors.append(error)

    def on_their_own() -> None:
        try:
            for number in range(15):
                audit.record(factory, EventType.SECURITY_ALERT, action=Action.EXECUTE, detail={"own": number})
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=in_transactions, args=(index % 2 == 0,)) for index in range(4)]
    threads.append(threading.Thread(target=on_their_own))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert _count(factory) == 2 * 15 * 2 + 15 * 2 + 15
    with factory() as db:
        result = audit.verify(db)
    assert result.ok, result.problems[:5]


def test_sessions_without_the_key_cannot_append_or_verify(factory: sessionmaker[Session]) -> None:
    keyless = session_factory(factory.kw["bind"])
    with pytest.raises(AuditKeyMissingError, match="no audit key"), transaction(keyless) as db:
        audit.append(db, EventType.QUERY, action=Action.EXECUTE)
    with pytest.raises(AuditKeyMissingError), keyless() as db:
        audit.verify(db)
