"""Which database errors count as losing to a concurrent writer (retried) and which do not
(an outage is journaled; a refused row is a bug to report), and the retry's bound."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from core.errors import StoreBusy
from core.store.db import is_conflict, retry_conflicts
from tests.support import sqlite_error


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("error", "conflict"),
    [
        (IntegrityError("INSERT", None, sqlite_error("INSERT INTO t VALUES (1)",
                                                      "INSERT INTO t VALUES (1)")), True),
        (IntegrityError("INSERT", None, sqlite_error("INSERT INTO t VALUES (NULL)")), False),
        (DBAPIError("UPDATE", None, _PgError("40P01")), True),  # deadlock
        (DBAPIError("UPDATE", None, _PgError("40001")), True),  # serialization failure
        (IntegrityError("INSERT", None, _PgError("23505")), True),  # unique violation
        (IntegrityError("INSERT", None, _PgError("23502")), False),  # not null
        (OperationalError("BEGIN", None, sqlite3.OperationalError("database is locked")), False),
        (ValueError("not a database error"), False),
    ],
)  # fmt: skip
def test_conflicts_are_told_from_other_errors(error: Exception, conflict: bool) -> None:
    assert is_conflict(error) is conflict


async def test_conflicts_are_retried_with_a_bound() -> None:
    calls = {"n": 0}

    async def losing_twice() -> str:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise DBAPIError("UPDATE", None, _PgError("40P01"))
        return "written"

    assert await retry_conflicts(losing_twice, "test") == "written" and calls["n"] == 3

    async def always_losing() -> str:
        calls["n"] += 1
        raise DBAPIError("UPDATE", None, _PgError("40001"))

    calls["n"] = 0
    with pytest.raises(StoreBusy, match="send it again"):
        await retry_conflicts(always_losing, "test", attempts=3)
    assert calls["n"] == 3

    async def refused() -> str:
        raise IntegrityError("INSERT", None, _PgError("23502"))

    with pytest.raises(IntegrityError):  # not a conflict: not retried, not hidden
        await retry_conflicts(refused, "test")
