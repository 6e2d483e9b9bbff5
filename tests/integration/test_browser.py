"""The chat page and the operator console in a real browser (Debian's chromium, driven by
Playwright) against a live gateway on the real vLLM.

What bad input gets here: a wrong key is refused at sign-in with the API's message and nothing
is stored; markup in a document or a model's answer is shown as text and never runs. A
screenshot of each failed test's page is saved under test-artifacts/browser/.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from core.settings import load_settings
from tests.chromium import ask, chromium
from tests.integration.conftest import BASE_MODEL, EmbeddedServer
from tests.support import ThreadedGateway, create_keys, wait_until
from trainer.sample import sample_adapter

pytestmark = pytest.mark.vllm

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
ALIAS = "support"
COLLECTION = "handbook"
POLICY = {
    "id": "returns-policy",
    "source": "handbook/returns.md",
    "markdown": "# Zorblax Emporium returns\n\n## Purple teapots\n\n"
    "The Zorblax Emporium accepts returns of purple teapots within 47 days of purchase.",
}
HOSTILE = {
    "id": "warranty",
    "source": "handbook/warranty.md",
    "text": "Zorblax teapot warranty: <script>window.__pwned = 1</script>"
    '<img src=x onerror="window.__pwned = 2"> The Zorblax teapot warranty lasts three years.',
}
EXPECT_TIMEOUT_MS = 120_000  # a CPU vLLM answer, not a speed target


@pytest.fixture(scope="module")
def browser(live: tuple[ThreadedGateway, dict[str, str]]) -> Iterator[Browser]:
    # After the gateway: Playwright's sync API keeps an event loop running on this thread,
    # and setting up the gateway's store uses asyncio.run.
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(EXPECT_TIMEOUT_MS)
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for n, open_page in enumerate(context.pages):
            open_page.screenshot(path=ARTIFACTS / f"{request.node.name}-{n}.png", full_page=True)
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture(scope="module")
def live(
    embedded_server: EmbeddedServer,
    prepared_model: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ThreadedGateway, dict[str, str]]]:
    """One gateway for the module: an alias grounded in a small handbook."""
    settings = load_settings(
        data_dir=tmp_path_factory.mktemp("browser"),
        engine_mode="external",
        engine_urls=embedded_server.engine_url,
        base_model_name=BASE_MODEL,
        base_model_path=prepared_model,
        log_format="text",
        reconcile_interval_s=2.0,
        rollout_interval_s=3600,  # the rollout test decides by hand, from the console
        default_max_tokens=64,  # short answers: this is about the pages, not the model
        retrieval_models={ALIAS: {"collection": COLLECTION, "min_score": 0.0}},
    )
    gateway = ThreadedGateway.start(settings)
    keys = create_keys(settings.resolved_database_url)
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    assert gateway.post("/v1/admin/aliases", json={"alias": ALIAS}, headers=admin).is_success
    for document in (POLICY, HOSTILE):
        added = gateway.post(
            f"/v1/collections/{COLLECTION}/documents", json=document, headers=admin
        )
        assert added.status_code == 201, added.text
    yield gateway, keys
    gateway.stop()
    embedded_server.unload_adapters()


def _admin_get(gateway: ThreadedGateway, keys: dict[str, str], path: str, **params: Any) -> Any:
    response = gateway.get(
        path, headers={"Authorization": f"Bearer {keys['admin']}"}, params=params
    )
    assert response.status_code == 200, response.text
    return response.json()


# -- the chat page ------------------------------------------------------------------------------


def _sign_in_to_chat(page: Page, gateway: ThreadedGateway, key: str) -> None:
    page.goto(f"{gateway.base_url}/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#chat")).to_be_visible()
    page.get_by_label("Model").select_option(ALIAS)
    page.get_by_label("Temperature").fill("0")
    page.get_by_label("Max tokens").fill("48")


def test_sign_in_then_chat_streams_cites_and_regenerates(
    page: Page, live: tuple[ThreadedGateway, dict[str, str]]
) -> None:
    gateway, keys = live
    page.goto(f"{gateway.base_url}/")
    page.get_by_label("API key").fill("lg-not-a-real-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert").first).to_contain_text("Sign-in failed")
    assert page.evaluate("sessionStorage.getItem('loragate.chat.key')") is None

    _sign_in_to_chat(page, gateway, keys["chat"])
    # Record every length the answer's text goes through, to see it arrive in pieces.
    page.evaluate(
        """() => {
          window.__lengths = [];
          new MutationObserver(() => {
            const answer = document.querySelector('.turn.assistant .content');
            if (answer) window.__lengths.push(answer.textContent.length);
          }).observe(document.getElementById('messages'),
                     {childList: true, subtree: true, characterData: true});
        }"""
    )
    answer = ask(page, "How many days do I have to return a purple teapot to the Zorblax Emporium?")
    lengths = page.evaluate("window.__lengths")
    assert len({length for length in lengths if length > 0}) >= 2, lengths  # streamed, not whole
    assert int(answer.get_attribute("data-chunks") or 0) >= 2
    assert answer.locator(".content").inner_text().strip()

    source = answer.locator(".sources details").filter(has_text="handbook/returns.md")
    expect(source).to_have_count(1)
    source.locator("summary").click()
    expect(source.locator("p")).to_contain_text("47 days")
    expect(answer.locator(".version")).to_have_text(re.compile(r"\S"))

    first_id = answer.get_attribute("data-completion-id")
    answer.get_by_role("button", name="Regenerate").click()
    again = page.locator(".turn.assistant").last
    expect(again.locator(".actions")).to_be_visible()
    expect(page.locator(".turn.assistant")).to_have_count(1)  # replaced, not appended
    assert again.get_attribute("data-completion-id") != first_id

    def retry_flagged() -> bool:
        items = _admin_get(gateway, keys, "/v1/admin/review", state="", reason="retry")["data"]
        return any(item["completion_id"] == first_id for item in items)

    wait_until(retry_flagged, 30, "the regenerated answer flagged as a retry")


def test_markup_from_documents_and_answers_is_shown_as_text(
    page: Page, live: tuple[ThreadedGateway, dict[str, str]]
) -> None:
    gateway, keys = live
    _sign_in_to_chat(page, gateway, keys["chat"])
    answer = ask(page, "How long is the Zorblax teapot warranty?")
    source = answer.locator(".sources details").filter(has_text="handbook/warranty.md")
    expect(source).to_have_count(1)
    source.locator("summary").click()
    expect(source.locator("p")).to_contain_text("<script>window.__pwned = 1</script>")
    assert page.locator("#messages script, #messages img").count() == 0
    assert page.evaluate("window.__pwned") is None

    # The markdown renderer itself, on what a model could write.
    rendered = page.evaluate(
        """async () => {
          const { renderMarkdown } = await import('/ui/common.js');
          const box = document.createElement('div');
          box.append(renderMarkdown(
            '**bold** <img src=x onerror="window.__pwned=3"> [a](javascript:alert(1)) ' +
            '[b](https://example.org) `<b>code</b>`\\n\\n```\\n<script>x()</script>\\n```'));
          return {html: box.innerHTML, text: box.textContent};
        }"""
    )
    html = rendered["html"]
    assert "<strong>bold</strong>" in html and '<a href="https://example.org"' in html
    assert "<img" not in html and "<script>" not in html and "javascript:" not in html.split('"')
    assert "&lt;img src=x" in html and "&lt;script&gt;x()&lt;/script&gt;" in html
    assert page.evaluate("window.__pwned") is None


# -- the console ------------------------------------------------------------------------------


def _sign_in_to_console(page: Page, gateway: ThreadedGateway, key: str) -> None:
    page.goto(f"{gateway.base_url}/console")
    page.get_by_label("Admin API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#console")).to_be_visible()


def _confirm(page: Page) -> None:
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Confirm").click()
    expect(dialog).to_be_hidden()


def test_a_correction_goes_from_the_chat_page_to_the_review_queue_and_is_approved(
    page: Page, live: tuple[ThreadedGateway, dict[str, str]]
) -> None:
    gateway, keys = live
    _sign_in_to_chat(page, gateway, keys["chat"])
    answer = ask(page, "What colour are Zorblax teapots?")
    completion_id = answer.get_attribute("data-completion-id")
    answer.get_by_role("button", name="Thumbs down").click()
    expect(answer.get_by_role("status")).to_contain_text("Thanks")
    answer.get_by_role("button", name="Suggest a correction").click()
    answer.get_by_label("Suggested correction").fill("Zorblax teapots are purple.")
    answer.get_by_role("button", name="Send correction").click()
    expect(answer.get_by_role("status")).to_contain_text("review queue")

    console = page.context.new_page()
    _sign_in_to_console(console, gateway, keys["admin"])
    row = console.locator(f'tr[data-completion-id="{completion_id}"]')
    expect(row).to_have_count(1)
    expect(row).to_contain_text("correction")
    expect(row).to_contain_text("What colour are Zorblax teapots?")
    correction = row.get_by_label(re.compile(r"Correction for item \d+"))
    expect(correction).to_have_value("Zorblax teapots are purple.")
    correction.fill("Zorblax teapots are purple, always.")
    row.get_by_role("button", name="Approve").click()
    expect(row).to_have_count(0)  # gone from the pending view

    console.get_by_label("State").select_option("approved")
    console.get_by_role("button", name="Filter").click()
    expect(console.locator(f'tr[data-completion-id="{completion_id}"]')).to_contain_text("approved")
    items = _admin_get(gateway, keys, "/v1/admin/review", state="approved")["data"]
    item = next(item for item in items if item["completion_id"] == completion_id)
    assert item["correction"] == "Zorblax teapots are purple, always."

    # The quality chart draws the alias's answers, from the store.
    console.get_by_role("tab", name="Quality").click()
    console.locator("#panel-quality").get_by_label("Alias").select_option(ALIAS)
    console.get_by_role("button", name="Show").click()
    expect(console.locator("#quality-charts svg")).to_have_count(2)
    expect(console.locator("#quality-charts polyline").first).to_be_attached()
    expect(console.locator('table[data-metric="positive_ratio"]')).to_contain_text("0%")


def _publish_two(
    gateway: ThreadedGateway, keys: dict[str, str], alias: str, model: Path, tmp_path: Path
) -> list[str]:
    """Two adapter versions of a new alias (the first goes live); their names."""
    names = []
    for seed in range(2):
        lora = sample_adapter(tmp_path / f"lora{seed}", model, seed=seed)
        published = gateway.post(
            "/v1/admin/adapters",
            headers={"Authorization": f"Bearer {keys['admin']}"},
            json={"path": str(lora), "alias": alias},
        )
        assert published.status_code == 201, published.text
        names.append(published.json()["name"])
    return names


def test_start_watch_and_roll_back_a_rollout_from_the_console(
    page: Page,
    live: tuple[ThreadedGateway, dict[str, str]],
    prepared_model: Path,
    tmp_path: Path,
) -> None:
    gateway, keys = live
    alias = f"r{uuid.uuid4().hex[:8]}"
    live_version, candidate = _publish_two(gateway, keys, alias, prepared_model, tmp_path)

    _sign_in_to_console(page, gateway, keys["admin"])
    page.get_by_role("tab", name="Rollouts").click()
    page.locator("#panel-rollouts").get_by_label("Alias").select_option(alias)
    expect(page.locator("#rollout-card")).to_contain_text("No rollout yet")
    page.get_by_label("Candidate version").select_option(candidate)
    page.get_by_label("Steps (percent)").fill("30, 100")
    page.get_by_role("button", name="Start rollout").click()
    _confirm(page)
    expect(page.locator("#rollout-state")).to_have_text("running")
    expect(page.locator("#rollout-weight")).to_have_text("30%")
    expect(page.locator("#rollout-card")).not_to_contain_text("null")  # no reason yet: no line
    expect(page.locator("#rollout-history")).to_contain_text("started")

    page.get_by_role("tab", name="Adapters").click()
    expect(page.locator(f'tr[data-version="{candidate}"]')).to_contain_text("30%")
    expect(page.locator(f'tr[data-version="{live_version}"]')).to_contain_text("70%")

    page.get_by_role("tab", name="Rollouts").click()
    page.locator("#panel-rollouts").get_by_label("Alias").select_option(alias)
    page.get_by_role("button", name="Roll back").click()
    _confirm(page)
    expect(page.locator("#rollout-state")).to_have_text("rolled_back")
    expect(page.locator("#rollout-history")).to_contain_text("rolled_back")
    status = _admin_get(gateway, keys, f"/v1/admin/rollouts/{alias}")
    assert status["state"] == "rolled_back" and status["weight"] == 0


def test_start_watch_and_stop_an_experiment_from_the_console(
    page: Page,
    live: tuple[ThreadedGateway, dict[str, str]],
    prepared_model: Path,
    tmp_path: Path,
) -> None:
    gateway, keys = live
    alias = f"x{uuid.uuid4().hex[:8]}"
    _publish_two(gateway, keys, alias, prepared_model, tmp_path)

    _sign_in_to_console(page, gateway, keys["admin"])
    page.get_by_role("tab", name="Experiments").click()
    page.locator("#panel-experiments").get_by_label("Alias").select_option(alias)
    expect(page.locator("#experiment-card")).to_contain_text("No experiment yet")
    page.get_by_label("Arms (the first is the control)").fill("v1, v2, v2:no-retrieval")
    page.get_by_label("Max rated per arm").fill("40")
    page.get_by_role("button", name="Start experiment").click()
    _confirm(page)
    expect(page.locator("#experiment-state")).to_have_text("running")
    expect(page.locator("#experiment-arms-rows tr")).to_have_count(3)
    expect(page.locator('tr[data-arm="v2:no-retrieval"]')).to_contain_text("no ratings yet")
    expect(page.locator("#experiment-card")).not_to_contain_text("null")
    expect(page.get_by_role("button", name="Promote the winner")).to_be_disabled()

    chat = {"Authorization": f"Bearer {keys['chat']}"}
    for n in range(6):  # an even split, sticky per conversation: every arm serves some
        answered = gateway.post(
            "/v1/chat/completions", headers=chat,
            json={"model": alias, "max_tokens": 1, "conversation_id": f"{alias}-{n}",
                  "messages": [{"role": "user", "content": "Hello"}]},
        )  # fmt: skip
        assert answered.status_code == 200, answered.text
    served = page.locator("#experiment-arms-rows td:nth-child(3)")
    wait_until(  # the tab refreshes itself: no click
        lambda: sum(int(text) for text in served.all_inner_texts()) == 6, 30, "6 answers counted"
    )

    page.get_by_role("button", name="Stop").click()
    _confirm(page)
    expect(page.locator("#experiment-state")).to_have_text("stopped")
    expect(page.get_by_role("button", name="Start experiment")).to_be_enabled()
    status = _admin_get(gateway, keys, f"/v1/admin/experiments/{alias}")
    assert status["state"] == "stopped" and status["reason"] == "stopped by an operator"


def test_collections_view_and_search(
    page: Page, live: tuple[ThreadedGateway, dict[str, str]]
) -> None:
    gateway, keys = live
    _sign_in_to_console(page, gateway, keys["admin"])
    page.get_by_role("tab", name="Collections").click()
    row = page.locator(f'tr[data-collection="{COLLECTION}"]')
    expect(row).to_contain_text("2")  # documents
    page.locator("#search-form").get_by_label("Collection").select_option(COLLECTION)
    page.get_by_label("Search").fill("purple teapot returns")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#search-results .hit").first).to_contain_text("47 days")

    page.locator("#document-form").get_by_label("Collection").fill(COLLECTION)
    page.get_by_label("Document id").fill("spoons")
    page.get_by_label("Markdown text").fill("Zorblax spoons are never refundable.")
    page.get_by_role("button", name="Ingest").click()
    expect(page.locator("#document-status")).to_contain_text("spoons: ")
    expect(row).to_contain_text("3")


# -- accessibility basics -------------------------------------------------------------------

UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
  .map(e => e.id || e.outerHTML)"""
UNNAMED_BUTTONS = """() => [...document.querySelectorAll('button')]
  .filter(b => !b.textContent.trim() && !b.getAttribute('aria-label'))
  .map(b => b.outerHTML)"""


def test_every_control_is_labelled_and_both_pages_work_from_the_keyboard(
    page: Page, live: tuple[ThreadedGateway, dict[str, str]]
) -> None:
    gateway, keys = live
    page.goto(f"{gateway.base_url}/")
    _tab_to(page, "api-key")
    page.keyboard.type(keys["chat"])
    page.keyboard.press("Enter")
    expect(page.locator("#chat")).to_be_visible()
    expect(page.locator("#prompt")).to_be_focused()
    page.get_by_label("Model").select_option(ALIAS)
    page.locator("#prompt").focus()
    page.keyboard.type("Say hello.")
    page.keyboard.press("Enter")
    expect(page.locator(".turn.assistant .actions")).to_be_visible()
    assert page.evaluate("document.documentElement.lang") == "en"
    assert page.evaluate(UNLABELLED) == []
    assert page.evaluate(UNNAMED_BUTTONS) == []

    page.goto(f"{gateway.base_url}/console")
    _tab_to(page, "admin-key")
    page.keyboard.type(keys["admin"])
    page.keyboard.press("Enter")
    expect(page.locator("#console")).to_be_visible()
    page.get_by_role("tab", name="Review queue").focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="Adapters")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#panel-adapters")).to_be_visible()
    assert page.evaluate(UNLABELLED) == []
    assert page.evaluate(UNNAMED_BUTTONS) == []


def _tab_to(page: Page, element_id: str, presses: int = 10) -> None:
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return
    raise AssertionError(f"#{element_id} cannot be reached with the Tab key")
