"""A store of the test's own, on SQLite and on PostgreSQL: import ``own_database_url`` into a
test module and its ``database_url`` fixture is this one, not tests/conftest.py's.

The conftest's PostgreSQL database is shared by the whole session. A test that leaves
adapter versions in it (the concurrency tests publish dozens of small hand-made ones) would
hand them to every later gateway on that database, whose reconciler loads every serving
version on its engine: into the session's vLLM, which refuses them, and before any adapter
of the later test is served. So these tests get a fresh PostgreSQL database each, dropped
afterwards, as they get a fresh SQLite file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import fresh_postgres_database


@pytest.fixture(name="database_url", params=["sqlite", "postgresql"])
def own_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'loragate.db'}"
        return
    with fresh_postgres_database() as url:
        yield url
