"""``loragate ingest``: files into a collection, with progress, resumable by content hash."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from pathlib import Path

from core.progress import Progress
from core.settings import Settings
from core.store import Database
from gateway.wiring import build_retriever
from retrieval.documents import iter_files, read_path
from retrieval.errors import InvalidDocument
from retrieval.service import check_collection_name

log = logging.getLogger("loragate.ingest")


def ingest_path(settings: Settings, path: Path, collection: str) -> Counter[str]:
    check_collection_name(collection)
    files = iter_files(path)
    root = path if path.is_dir() else path.parent
    return asyncio.run(_ingest(settings, files, root, collection))


async def _ingest(
    settings: Settings, files: list[Path], root: Path, collection: str
) -> Counter[str]:
    summary: Counter[str] = Counter(created=0, replaced=0, unchanged=0, failed=0, chunks=0)
    db = Database(settings.resolved_database_url)
    try:
        await db.migrate()
        retriever = build_retriever(settings, db)
        with Progress(f"ingest {collection}", len(files)) as progress:
            for file in files:
                try:
                    for document in read_path(file, root):
                        result = await retriever.upsert(collection, document)
                        summary[result.status] += 1
                        summary["chunks"] += result.chunks
                except InvalidDocument as exc:
                    summary["failed"] += 1
                    log.error("skipped", extra={"file": str(file), "error": exc.message})
                progress(file.name)
    finally:
        await db.dispose()
    return summary
