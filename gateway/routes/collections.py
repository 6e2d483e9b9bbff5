"""Document collections: ingest (admin), delete (admin), search (chat)."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.params import Parameter

from gateway.action_limits import check_action
from gateway.errors import NotFound
from gateway.quota_gate import QuotaGate
from retrieval.documents import from_fields
from retrieval.service import MAX_K, Retriever


class DocumentIn(msgspec.Struct, forbid_unknown_fields=False):
    """One document: exactly one of `text`, `markdown` or `html`."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    text: str | None = None
    markdown: str | None = None
    html: str | None = None
    source: str = ""
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


async def _delete(name: str, document_id: str, retriever: Retriever) -> dict[str, Any]:
    if not await retriever.delete_document(name, document_id):
        raise NotFound(f"No document '{document_id}' in collection '{name}'.", param="id",
                       code="document_not_found")  # fmt: skip
    return {"id": document_id, "collection": name, "deleted": True}


class CollectionRoutes(Controller):
    """Collections: chat keys list and search them, admin keys change their documents."""

    path = "/v1/collections"
    tags = ["retrieval"]

    @get("/", opt={"scope": "chat"})
    async def list_collections(self, retriever: Retriever) -> dict[str, Any]:
        """Collections with their document and chunk counts."""
        return {"object": "list", "data": await retriever.list_collections()}

    @post("/{name:str}/documents", opt={"scope": "admin"}, status_code=201)
    async def add_document(
        self, name: str, data: DocumentIn, retriever: Retriever
    ) -> dict[str, Any]:
        """Add a document, or replace the one with the same id. Creates the collection."""
        # Off the event loop: reading a large page's HTML and stylesheets takes a while.
        document = await anyio.to_thread.run_sync(lambda: from_fields(
            data.id, text=data.text, markdown=data.markdown, html=data.html,
            source=data.source, metadata=data.metadata,
        ))  # fmt: skip
        result = await retriever.upsert(name, document)
        return {"id": result.document_id, "collection": name, "status": result.status,
                "chunks": result.chunks}  # fmt: skip

    @delete("/{name:str}/documents/{document_id:path}", opt={"scope": "admin"}, status_code=200)
    async def delete_document(
        self, name: str, document_id: str, retriever: Retriever
    ) -> dict[str, Any]:
        """Remove a document and its chunks. The path form suits plain ids: the server
        normalises paths (``//`` and a trailing ``/`` collapse), so an id with a leading,
        doubled or trailing slash is deleted with ``?id=`` on ``.../documents`` instead."""
        return await _delete(name, document_id.lstrip("/"), retriever)

    @delete("/{name:str}/documents", opt={"scope": "admin"}, status_code=200)
    async def delete_document_by_id(
        self,
        name: str,
        retriever: Retriever,
        document_id: Annotated[
            str, Parameter(query="id", min_length=1, max_length=512, description="The id, as is.")
        ],
    ) -> dict[str, Any]:
        """Remove a document and its chunks; the id (any characters) is a query parameter."""
        return await _delete(name, document_id, retriever)

    @get("/{name:str}/search", opt={"scope": "chat"})
    async def search(
        self,
        name: str,
        retriever: Retriever,
        quotas: QuotaGate,
        request: Request[Any, Any, Any],
        q: Annotated[str, Parameter(min_length=1, max_length=4096, description="The query.")],
        k: Annotated[int, Parameter(ge=1, le=MAX_K, description="How many chunks.")] = 5,
    ) -> dict[str, Any]:
        """The chunks nearest in meaning to `q`, best first. Limited per key
        (``searches_per_minute``): 429 ``rate_limit_error`` with Retry-After."""
        await check_action(quotas, request.state.principal, "searches")
        hits = await retriever.search(name, q, k)
        return {
            "object": "list",
            "data": [
                {"chunk_id": hit.chunk_id, "score": round(hit.score, 4),
                 "document_id": hit.document_id, "source": hit.source, "section": hit.section,
                 "text": hit.text}
                for hit in hits
            ],
        }  # fmt: skip
