"""The browser pages: the chat page (``/``) and the operator console (``/console``).

Plain HTML, CSS and JavaScript shipped inside the package: no build step, no CDN, nothing
fetched from elsewhere. The pages hold no secret and no server-side state; they call the same
API as any client, with the key the user types in, kept in the tab's sessionStorage.

Every page is sent with a Content-Security-Policy that allows scripts from this origin only,
so a string from a model or a document cannot run even if a renderer bug let it into the DOM.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from litestar import Response, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.handlers import HTTPRouteHandler
from litestar.static_files import create_static_files_router

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PATH = "/ui"
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


@cache
def _page_bytes(name: str) -> bytes:
    return (STATIC_DIR / name).read_bytes()


def _page(name: str) -> Response[bytes]:
    return Response(
        _page_bytes(name),
        media_type="text/html; charset=utf-8",
        headers={**SECURITY_HEADERS, "cache-control": "no-cache"},
    )


@get("/", include_in_schema=False, sync_to_thread=False)
def chat_page() -> Response[bytes]:
    """The end users' chat page."""
    return _page("chat.html")


@get("/console", include_in_schema=False, sync_to_thread=False)
def console_page() -> Response[bytes]:
    """The operators' console (it needs an admin key)."""
    return _page("console.html")


def _static_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def ui_routes(enabled: bool = True) -> list[HTTPRouteHandler | Router]:
    """The pages and their assets, to be mounted on the app (none when disabled)."""
    if not enabled:
        return []
    assets: Router = create_static_files_router(
        path=STATIC_PATH,
        directories=[STATIC_DIR],
        name="ui",
        include_in_schema=False,
        cache_control=CacheControlHeader(no_cache=True),
        after_request=_static_headers,
    )
    return [chat_page, console_page, assets]
