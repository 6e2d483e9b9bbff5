"""The browser pages as HTTP resources: served from the package with a strict CSP, every
asset they reference ships with them, and nothing is fetched from another origin.
The pages' behaviour is tested in a real browser in tests/integration/test_browser.py."""

from __future__ import annotations

import re

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from gateway.flagging import REASONS
from gateway.ui import STATIC_DIR, ui_routes

PAGES = ["/", "/console"]


@pytest.fixture
def client() -> TestClient[Litestar]:
    return TestClient(Litestar(route_handlers=ui_routes()))


@pytest.mark.parametrize("path", PAGES)
def test_pages_are_html_with_a_strict_content_security_policy(
    client: TestClient[Litestar], path: str
) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", PAGES)
def test_every_asset_a_page_uses_is_served_from_here(
    client: TestClient[Litestar], path: str
) -> None:
    html = client.get(path).text
    assets = re.findall(r'(?:src|href)="([^"#]+)"', html)
    assert assets, "the page references no assets"
    for asset in assets:
        if asset.startswith("data:") or asset in PAGES:
            continue
        assert asset.startswith("/ui/"), f"{asset} is not served by the gateway"
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert response.headers["x-content-type-options"] == "nosniff"


def test_scripts_are_javascript_and_import_only_local_modules(
    client: TestClient[Litestar],
) -> None:
    for script in STATIC_DIR.glob("*.js"):
        response = client.get(f"/ui/{script.name}")
        assert "javascript" in response.headers["content-type"], script.name
        for target in re.findall(r'from "([^"]+)"', script.read_text()):
            assert target.startswith("./") and (STATIC_DIR / target[2:]).is_file(), target


def test_no_script_builds_html_from_strings() -> None:
    # The pages' safety rule (common.js): text only ever reaches the DOM as Text nodes.
    for script in STATIC_DIR.glob("*.js"):
        text = script.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, f"{script.name} uses {sink}"


def test_the_console_offers_exactly_the_flagging_reasons() -> None:
    listed = re.search(r"const REASONS = \[([^\]]*)\]", (STATIC_DIR / "console.js").read_text())
    assert listed is not None
    assert re.findall(r'"([a-z_]+)"', listed.group(1)) == list(REASONS)


def test_a_missing_asset_is_404_and_the_pages_can_be_turned_off() -> None:
    with TestClient(Litestar(route_handlers=ui_routes())) as client:
        assert client.get("/ui/nope.js").status_code == 404
        assert client.get("/ui/../__init__.py").status_code == 404
    with TestClient(Litestar(route_handlers=ui_routes(enabled=False))) as client:
        assert client.get("/").status_code == 404
        assert client.get("/console").status_code == 404
