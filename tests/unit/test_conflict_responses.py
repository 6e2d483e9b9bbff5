"""What a client gets when a write met another writer (issue 18): the loser of a state change
a 409 in OpenAI's shape; a write that lost to a concurrent one and was not retried where it
was made a 503 ``store_busy`` with Retry-After (never a bare 500); a row refused for another
reason stays a 500, a bug to report."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from adapters.experiments import ExperimentConflict
from adapters.rollout import RolloutError
from gateway.http_errors import describe
from tests.support import sqlite_error


def _sqlite_integrity_error(*statements: str) -> IntegrityError:
    return IntegrityError("INSERT INTO t ...", None, sqlite_error(*statements))


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (RolloutError("alias a has no rollout in progress"), "rollout_conflict"),
        (ExperimentConflict("alias a has no experiment running"), "experiment_conflict"),
    ],
)
def test_the_loser_of_a_state_change_gets_409(error: Exception, code: str) -> None:
    info = describe(error)
    assert (info.status_code, info.type, info.code) == (409, "invalid_request_error", code)
    assert info.body()["error"]["message"] == str(error)


def test_a_key_taken_meanwhile_is_503_store_busy_with_retry_after() -> None:
    taken = _sqlite_integrity_error("INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (1)")
    info = describe(taken)
    assert (info.status_code, info.type, info.code) == (503, "service_unavailable", "store_busy")
    assert info.headers() == {"Retry-After": "1"}
    assert "send it again" in info.message


def test_a_row_refused_for_another_reason_is_still_a_500() -> None:
    refused = _sqlite_integrity_error("INSERT INTO t VALUES (NULL)")  # NOT NULL: a bug
    assert describe(refused).status_code == 500
