"""Every admin route refuses a chat key (403) and every key-guarded route refuses no key
(401), both with OpenAI's error shape: the routes are read from the app itself, so a new
route cannot be left open by mistake."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from core.settings import load_settings
from gateway.app import create_app
from tests.support import create_keys

PARAMS = {"int": "1", "str": "x", "path": "x"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Litestar, dict[str, str]]]:
    data_dir: Path = tmp_path_factory.mktemp("scope")
    settings = load_settings(
        data_dir=data_dir,
        engine_mode="external",
        engine_urls="http://127.0.0.1:9",  # nothing listens: the guard must answer first
        log_format="text",
    )
    yield create_app(settings), create_keys(settings.resolved_database_url)


def _guarded_routes(app: Litestar) -> Iterator[tuple[str, str, str]]:
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if set(handler.http_methods) == {"OPTIONS"}:
                continue  # Litestar's own answer to OPTIONS: the allowed methods, no data
            scope = handler.opt.get("scope")
            if scope is None:
                # Only the probes, metrics and the schema are open; every API route says
                # which scope it needs, or the guard would let it through.
                assert not route.path.startswith("/v1"), f"{route.path} declares no scope"
                continue
            path = re.sub(r"\{\w+:(\w+)\}", lambda m: PARAMS[m.group(1)], route.path)
            for method in sorted(handler.http_methods):
                yield scope, method, path


def test_scopes_are_enforced_on_every_route(app: tuple[Litestar, dict[str, str]]) -> None:
    litestar_app, keys = app
    routes = list(_guarded_routes(litestar_app))
    admin_routes = [route for route in routes if route[0] == "admin"]
    assert len(admin_routes) >= 20 and any(path == "/v1/chat/completions" for _, _, path in routes)
    with TestClient(litestar_app) as client:
        for scope, method, path in routes:
            anonymous = client.request(method, path, json={})
            assert anonymous.status_code == 401, (method, path)
            assert anonymous.json()["error"]["type"] == "authentication_error"
            if scope != "admin":
                continue
            chat = client.request(
                method, path, json={}, headers={"Authorization": f"Bearer {keys['chat']}"}
            )
            assert chat.status_code == 403, (method, path, chat.text)
            assert chat.json()["error"]["code"] == "permission_denied"
        # Litestar's OPTIONS answer inherits a controller's scope; the guard lets it through,
        # as it did when every handler carried its own scope.
        for path in ("/v1/chat/completions", "/v1/admin/keys", "/v1/collections"):
            answer = client.options(path)
            assert answer.status_code == 204, (path, answer.text)
