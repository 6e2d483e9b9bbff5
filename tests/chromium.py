"""Debian's Chromium, headless, for the tests of the gateway's pages, and the steps on those
pages that more than one test takes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from playwright.sync_api import Browser, Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@contextmanager
def chromium() -> Iterator[Browser]:
    """A browser, closed on the way out. Playwright's sync API holds this thread's event loop
    while it is open: set up anything that calls ``asyncio.run`` (a gateway's store) first."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def ask(page: Page, question: str) -> Any:
    """Send a question on the chat page and wait for its answer to finish; the answer's list
    item."""
    answers = page.locator(".turn.assistant")
    before = answers.count()
    page.get_by_label("Message", exact=True).fill(question)
    page.get_by_label("Message", exact=True).press("Enter")
    answer = answers.nth(before)
    expect(answer.locator(".actions")).to_be_visible()  # drawn once the stream has ended
    return answer
