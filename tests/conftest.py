"""Fixtures shared by unit and integration tests: the base model and the databases."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import run, session_seed

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get(
    "LORAGATE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def pytest_report_header() -> str:
    return f"seed {session_seed()} (LORAGATE_TEST_SEED={session_seed()} replays this run)"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that kill or stop the shared vLLM server run after everything else.
    def order(item: pytest.Item) -> int:
        marker = item.get_closest_marker("destructive")
        return 0 if marker is None else int(marker.kwargs.get("order", 1))

    items.sort(key=order)


@pytest.fixture(scope="session", autouse=True)
def embedding_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every gateway of the session shares one int8 ONNX copy of the embedder instead of
    exporting its own into its fresh data directory (about 10 s of CPU each)."""
    with _environment("LORAGATE_EMBEDDING_CACHE_DIR", tmp_path_factory.mktemp("embedder")):
        yield


@pytest.fixture(scope="session", autouse=True)
def adapter_publish_roots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests publish adapters they make under pytest's temp folder: allow it, for the
    gateways built here and the ones started as subprocesses (they inherit the env)."""
    with _environment("LORAGATE_ADAPTER_PUBLISH_ROOTS", tmp_path_factory.getbasetemp()):
        yield


@contextmanager
def _environment(name: str, value: Path) -> Iterator[None]:
    before = os.environ.get(name)
    os.environ[name] = str(value)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


@pytest.fixture(scope="session")
def prepared_model() -> Path:
    """The bundled base model as safetensors, prepared once and reused across runs."""
    from adapters.base_model import prepare_base_model
    from core.progress import Progress

    target = Path(
        os.environ.get("LORAGATE_TEST_MODEL_DIR", REPO / "data/models/SmolLM2-135M-Instruct")
    )
    with Progress("model prepare (tests)", 6) as progress:
        prepare_base_model(target, progress)
    return target


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database (its async URL), dropped afterwards."""
    import asyncpg

    name = f"loragate_test_{uuid.uuid4().hex[:10]}"

    async def execute(sql: str) -> None:
        connection = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    run(execute(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'loragate.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
