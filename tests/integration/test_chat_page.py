"""The chat page in a real browser (Debian's chromium, driven by Playwright) on a real gateway
whose vLLM is a scripted stand-in (tests/standin_vllm.py): what the page does, not what a
model says. The same page on the real vLLM is in test_browser.py.

Checked here (issue 22): speaker labels; the visible defaults of the sampling fields; the
system prompt and the collection picker reaching the request; citations that open their
source's text; Stop and Esc ending a stream (the gateway closes vLLM's stream too); Enter
sends, Shift+Enter adds a line; icons drawn without any emoji; a conversation kept across a
reload and, from another tab, read back from the gateway, times shown in the browser's zone
(America/New_York); another key never sees it; at 390 px wide the sidebar folds away and
nothing overflows; every control has a name.

``LORAGATE_UPDATE_SCREENSHOTS=1`` also saves the screenshots used by docs/console.md.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from core.settings import load_settings
from tests.chromium import ask, chromium
from tests.standin_vllm import SLOW_WORD, StandInVllm
from tests.support import ThreadedGateway, create_keys, wait_until

MODEL = "SmolLM2-135M-Instruct"
ZONE = "America/New_York"
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
POLICY = {
    "id": "returns-policy",
    "source": "handbook/returns.md",
    "markdown": "# Zorblax Emporium returns\n\n## Purple teapots\n\n"
    "The Zorblax Emporium accepts returns of purple teapots within 47 days of purchase.",
}
EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf]")
UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
  .map(e => e.id || e.outerHTML)"""
UNNAMED_BUTTONS = """() => [...document.querySelectorAll('button')]
  .filter(b => !b.textContent.trim() && !b.getAttribute('aria-label'))
  .map(b => b.outerHTML)"""
OVERFLOW = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ThreadedGateway, StandInVllm, dict[str, str]]]:
    data_dir = tmp_path_factory.mktemp("chat-page")
    stand_in = StandInVllm(MODEL).start()
    settings = load_settings(
        data_dir=data_dir, engine_mode="external", engine_urls=stand_in.url,
        base_model_name=MODEL, log_format="text", retrieval_min_score=0.0,
    )  # fmt: skip
    keys = create_keys(
        settings.resolved_database_url, {"admin": "admin", "alice": "chat", "bob": "chat"}
    )
    gateway = ThreadedGateway.start(settings)
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    added = gateway.post("/v1/collections/handbook/documents", json=POLICY, headers=admin)
    assert added.status_code == 201, added.text
    yield gateway, stand_in, keys
    gateway.stop()
    stand_in.stop()


@pytest.fixture(scope="module")
def browser(site: Any) -> Iterator[Browser]:
    # After the gateway: Playwright's sync API holds this thread's event loop.
    with chromium() as browser:
        yield browser


@pytest.fixture
def contexts(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Any]:
    """New browser contexts (each a fresh tab's storage) in New York time; every page's
    uncaught errors fail the test, and a failed test's pages are saved as screenshots."""
    opened: list[BrowserContext] = []
    errors: list[str] = []

    def new(**options: Any) -> Page:
        context = browser.new_context(timezone_id=ZONE, locale="en-US", **options)
        opened.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.on("pageerror", lambda error: errors.append(str(error)))
        return page

    expect.set_options(timeout=30_000)
    yield new
    report = getattr(request.node, "report_call", None)
    for n, context in enumerate(opened):
        if report is not None and report.failed:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            for m, page in enumerate(context.pages):
                page.screenshot(path=ARTIFACTS / f"{request.node.name}-{n}-{m}.png")
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def _screenshot(page: Page, name: str) -> None:
    if os.environ.get("LORAGATE_UPDATE_SCREENSHOTS"):
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=DOCS_IMG / name)


def _sign_in(page: Page, gateway: ThreadedGateway, key: str) -> None:
    page.goto(f"{gateway.base_url}/")
    page.get_by_label("API key").fill(key)
    page.get_by_label("API key").press("Enter")
    expect(page.locator("#chat")).to_be_visible()
    expect(page.locator("#prompt")).to_be_focused()


def test_a_conversation_with_settings_sources_stop_and_history(
    site: tuple[ThreadedGateway, StandInVllm, dict[str, str]], contexts: Any
) -> None:
    gateway, stand_in, keys = site
    page = contexts(viewport={"width": 1280, "height": 800})
    _sign_in(page, gateway, keys["alice"])
    # The fields show the defaults they send.
    expect(page.get_by_label("Temperature")).to_have_value("0.7")
    expect(page.get_by_label("Max tokens")).to_have_value("512")
    page.get_by_label("Knowledge").select_option("collection:handbook")
    page.get_by_label("System prompt").fill("Answer in one sentence.")

    question = "How long can I return a purple teapot?"
    answer = ask(page, question)
    sent = stand_in.bodies[-1]
    assert sent["messages"][0] == {"role": "system", "content": "Answer in one sentence."}
    assert "47 days of purchase" in sent["messages"][-1]["content"]  # grounded in handbook
    assert (sent["temperature"], sent["max_tokens"]) == (0.7, 512)

    user = page.locator(".turn.user").last
    expect(user.locator(".speaker")).to_have_text("You")
    expect(user.locator(".content")).to_have_text(question)
    expect(answer.locator(".speaker .name")).to_have_text("Assistant")
    expect(answer.locator(".speaker .version")).to_have_text(MODEL)
    expect(answer.locator(".content")).to_contain_text("within 47 days")

    # [1] links to its source and opens the source's text.
    answer.get_by_role("link", name="Source 1").click()
    source = answer.locator(".sources details").filter(has_text="handbook/returns.md")
    expect(source).to_have_attribute("open", "")
    expect(source.locator("p")).to_contain_text("within 47 days of purchase")

    # Icons are SVG: no emoji anywhere, and every icon button has a name.
    for name in ("Thumbs up", "Thumbs down", "Suggest a correction", "Regenerate"):
        button = answer.get_by_role("button", name=name)
        expect(button.locator("svg")).to_have_count(1)
        assert not button.inner_text().strip()
    assert not EMOJI.search(page.locator("body").inner_text())
    answer.get_by_role("button", name="Thumbs up").click()
    expect(answer.get_by_role("status")).to_contain_text("Thanks")

    # Shift+Enter is a new line, not a send.
    prompt = page.get_by_label("Message", exact=True)
    prompt.fill("line one")
    prompt.press("Shift+Enter")
    prompt.type("line two")
    expect(prompt).to_have_value("line one\nline two")
    expect(page.locator(".turn.user")).to_have_count(1)
    _screenshot(page, "chat.png")

    # Stop with Esc: the stream ends in the page and towards vLLM.
    abandoned = stand_in.abandoned
    prompt.fill(f"Tell me {SLOW_WORD} about teapots.")
    prompt.press("Enter")
    stopping = page.locator(".turn.assistant").nth(1)
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    wait_until(lambda: int(stopping.get_attribute("data-chunks") or 0) >= 3, 30, "3 chunks")
    page.keyboard.press("Escape")
    expect(stopping.locator(".stopped")).to_have_text("Stopped.")
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    expect(stopping.locator(".actions")).to_be_visible()  # a stopped answer can be rated
    wait_until(lambda: stand_in.abandoned > abandoned, 30, "the gateway to close vLLM's stream")
    # The Stop button does the same.
    prompt.fill(f"Once more, {SLOW_WORD}.")
    prompt.press("Enter")
    third = page.locator(".turn.assistant").nth(2)
    wait_until(lambda: int(third.get_attribute("data-chunks") or 0) >= 2, 30, "2 chunks")
    page.get_by_role("button", name="Stop").click()
    expect(third.locator(".stopped")).to_be_visible()

    # A reload keeps the conversation.
    page.reload()
    expect(page.locator(".turn.assistant")).to_have_count(3)
    expect(page.locator(".turn.user").first).to_contain_text(question)

    # Another tab (nothing in its storage) reads it back from the gateway.
    conversation_id = page.evaluate("sessionStorage.getItem('loragate.chat.current')")
    wait_until(lambda: _stored_answers(gateway, keys["alice"], conversation_id) == 3, 30,
               "three answers in the conversation log")  # fmt: skip
    other = contexts(viewport={"width": 1280, "height": 800})
    _sign_in(other, gateway, keys["alice"])
    entry = other.locator(f'#conversation-list button[data-conversation-id="{conversation_id}"]')
    expect(entry).to_contain_text(question)
    summary = _summary(gateway, keys["alice"], conversation_id)
    shown = datetime.fromisoformat(summary["updated_at"]).astimezone(ZoneInfo(ZONE))
    expect(entry.locator("time")).to_contain_text(shown.strftime("%I:%M %p"))
    expect(entry.locator("time")).to_contain_text(re.compile(r"E[SD]T"))
    entry.click()
    expect(other.locator(".turn.assistant")).to_have_count(3)
    restored = other.locator(".turn.assistant").first
    expect(restored.locator(".content")).to_contain_text("within 47 days")
    expect(other.get_by_label("System prompt")).to_have_value("Answer in one sentence.")
    restored.get_by_role("link", name="Source 1").click()
    expect(restored.locator(".sources details p")).to_contain_text("within 47 days")
    expect(other.locator(".turn.assistant").nth(1).locator(".stopped")).to_be_visible()

    # Bob sees none of it, in the page or through the API.
    bob = contexts(viewport={"width": 1280, "height": 800})
    _sign_in(bob, gateway, keys["bob"])
    expect(bob.locator("#conversations-status")).to_have_text("No past conversations yet.")
    expect(bob.locator(f'[data-conversation-id="{conversation_id}"]')).to_have_count(0)
    refused = gateway.get(f"/v1/conversations/{conversation_id}",
                          headers={"Authorization": f"Bearer {keys['bob']}"})  # fmt: skip
    assert refused.status_code == 404


def _summary(gateway: ThreadedGateway, key: str, conversation_id: str) -> dict[str, Any]:
    listed = gateway.get("/v1/conversations", headers={"Authorization": f"Bearer {key}"})
    return next(c for c in listed.json()["data"] if c["id"] == conversation_id)  # type: ignore[no-any-return]


def _stored_answers(gateway: ThreadedGateway, key: str, conversation_id: str) -> int:
    read = gateway.get(f"/v1/conversations/{conversation_id}",
                       headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    return len(read.json()["turns"]) if read.status_code == 200 else 0


def test_the_page_fits_a_390_px_phone(
    site: tuple[ThreadedGateway, StandInVllm, dict[str, str]], contexts: Any
) -> None:
    gateway, _, keys = site
    page = contexts(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    _sign_in(page, gateway, keys["alice"])
    assert page.evaluate(OVERFLOW) <= 0
    expect(page.locator("#sidebar")).to_be_hidden()
    expect(page.get_by_role("button", name="Show conversations")).to_be_visible()
    expect(page.locator("#settings")).not_to_have_attribute("open", "")  # folded: more room
    page.locator("#settings summary").click()
    for label in ("Model", "Knowledge", "Temperature", "Max tokens"):
        box = page.get_by_label(label).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, label
    page.locator("#settings summary").click()

    for n in range(3):  # enough to scroll: the composer stays on screen
        ask(page, f"Question {n}: how long can I return a purple teapot, in days?")
    assert page.evaluate(OVERFLOW) <= 0
    composer = page.locator("#composer").bounding_box()
    assert composer is not None and composer["y"] + composer["height"] <= 844
    _screenshot(page, "chat-390px.png")

    page.get_by_role("button", name="Show conversations").click()
    expect(page.locator("#sidebar")).to_be_visible()
    assert page.evaluate(OVERFLOW) <= 0
    _screenshot(page, "chat-390px-conversations.png")
    page.keyboard.press("Escape")
    expect(page.locator("#sidebar")).to_be_hidden()
    page.get_by_role("button", name="Show conversations").click()
    page.get_by_role("button", name="New conversation").click()
    expect(page.locator("#sidebar")).to_be_hidden()  # picking one folds it again
    expect(page.locator(".turn")).to_have_count(0)


def test_every_control_has_a_name(
    site: tuple[ThreadedGateway, StandInVllm, dict[str, str]], contexts: Any
) -> None:
    gateway, _, keys = site
    page = contexts()
    page.goto(f"{gateway.base_url}/")
    assert page.evaluate(UNLABELLED) == [] and page.evaluate(UNNAMED_BUTTONS) == []
    _sign_in(page, gateway, keys["alice"])
    ask(page, "Hello?")
    assert page.evaluate("document.documentElement.lang") == "en"
    assert page.evaluate(UNLABELLED) == []
    assert page.evaluate(UNNAMED_BUTTONS) == []
