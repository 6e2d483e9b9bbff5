"""``loragate ingest``, ``collections`` and ``embedder``: documents, the collections they
form, and the model that embeds them."""

from __future__ import annotations

from pathlib import Path

import click

from gateway.cli.common import settings_of, with_store
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


@click.group()
def collections() -> None:
    """Document collections."""


@collections.command("list")
@json_output
@click.pass_context
def collections_list(ctx: click.Context) -> None:
    """Collections with their documents, chunks and index (kind and parameters, as recorded
    by the last process that saved it here)."""
    from gateway.wiring import build_retriever

    rows = with_store(settings_of(ctx), build_retriever, lambda r: r.list_collections())

    def text() -> None:
        for row in rows:
            click.echo(
                "\t".join([str(row["name"]), f"{row['documents']} documents",
                           f"{row['chunks']} chunks", index_summary(row["index"])])
            )  # fmt: skip

    emit(rows, text)


def index_summary(facts: object) -> str:
    """``ivfsq nlist=4000 nprobe=16 code_bytes=192 rerank_factor=4 memory=1.9 GiB``."""
    if not isinstance(facts, dict):
        return "index not built here yet"
    shown = [str(facts.get("kind"))]
    for key in ("nlist", "nprobe", "code_bytes", "rerank_factor", "build_s"):
        if key in facts:
            shown.append(f"{key}={facts[key]}")
    if isinstance(facts.get("memory_bytes"), int):
        shown.append(f"memory={facts['memory_bytes'] / 2**30:.2f} GiB")
    return " ".join(shown)


@click.group()
def embedder() -> None:
    """The sentence embedder."""


@embedder.command("prepare")
@json_output
@click.pass_context
def embedder_prepare(ctx: click.Context) -> None:
    """Make the int8 ONNX copy of the embedding model now (idempotent; otherwise the first
    start makes it), and say which backend embeds queries."""
    from gateway.wiring import embedder as build_embedder

    loaded = build_embedder(settings_of(ctx))
    backend, path = loaded.query_backend, loaded.query_model_path
    emit({"backend": backend, "path": str(path) if path else None},
         f"queries embedded with {backend}" + (f" ({path})" if path else ""))  # fmt: skip
