"""``loragate ingest``: documents into a collection."""

from __future__ import annotations

from pathlib import Path

import click

from gateway.cli.common import settings_of
from gateway.cli.output import emit, json_output


@click.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--collection", required=True, help="Collection to add the documents to.")
@json_output
@click.pass_context
def ingest(ctx: click.Context, path: Path, collection: str) -> None:
    """Ingest .txt, .md, .html and .jsonl files (a file or a folder) into a collection.

    Resumable: documents already ingested with the same content are skipped.
    """
    from gateway.ingest import ingest_path

    summary = ingest_path(settings_of(ctx), path, collection)
    emit(
        {"collection": collection, **summary},
        f"{collection}: {summary['created']} created, {summary['replaced']} replaced, "
        f"{summary['unchanged']} unchanged, {summary['failed']} failed, "
        f"{summary['chunks']} chunks written",
    )
    if summary["failed"]:
        raise SystemExit(1)
