"""The operator console in a real browser (Debian's chromium, driven by Playwright) on a real
gateway over a store seeded as a busy day leaves it (issue 22). No vLLM: nothing here asks a
model; the console's flows on the real vLLM are in test_browser.py.

Checked: the review queue in pages (25 a page, next and previous, page size) with each item's
time in the browser's zone (America/New_York) and a link to its answer in the conversation
log; the log searched by text and by status; a promoted rollout worded as promoted (not "Step 1
of 4 ... canary weight 100%"); the experiment's family-wise error as 0.017; an alias with no
rollout or experiment shown as such with no failed request (the console used to log 404s);
quality charts with a time axis and a message when there is nothing to draw; keys with their
limits and use.

``LORAGATE_UPDATE_SCREENSHOTS=1`` also saves the screenshots used by docs/console.md.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Page, Response, expect

from adapters.tables import AdapterVersion, Alias, Experiment, Rollout, RolloutEvent
from core.settings import load_settings
from core.store import Database
from core.store.keys import KeyStore, Quota
from core.store.tables import Conversation, ReviewItem
from monitor.tables import MonitorReport
from tests.chromium import chromium
from tests.support import ThreadedGateway, free_port, run
from trainer.tables import TrainingRun

ZONE = "America/New_York"
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
ITEMS = 30
NOW = datetime.now(UTC).replace(microsecond=0)
NEEDLE = "zorblax-spoon-refund"
REPORT = {
    "candidate": {"holdout": {"count": 40, "accuracy": 0.61234, "similarity": 0.8,
                              "groundedness": None,
                              "forms": {"served": 0.7, "reworded": 0.65, "closed_book": 0.1}},
                  "probes": {"count": 12, "accuracy": 0.5833333}},
    "baseline": {"model": "support-v2", "holdout": {"count": 40, "accuracy": 0.6,
                                                    "similarity": 0.79, "groundedness": None,
                                                    "forms": {"served": 0.8, "reworded": 0.55}},
                 "probes": {"count": 12, "accuracy": 0.75}},
    "gate": {"passed": False, "reasons": ["probe accuracy fell by 0.167 (tolerance 0.15)"],
             "holdout_gain": 0.01234, "probe_change": -0.1666667, "margin": 0.05,
             "probe_tolerance": 0.15},
    "holdout_items": [{"id": "x", "question": "q", "answer": "a", "reference": "r",
                       "correct": True}],
}  # fmt: skip
DASH = "\N{EN DASH}"  # the page writes ranges as typeset: 1{DASH}25


async def _seed(database_url: str) -> dict[str, Any]:
    db = Database(database_url)
    try:
        await db.migrate()
        store = KeyStore(db)
        admin = await store.create("admin", "ops")
        chat = await store.create("chat", "support-bot")
        await store.set_quota(chat.id, Quota(tokens_per_minute=5000, monthly_tokens=1000))
        async with db.transaction() as session:
            for n in range(ITEMS):
                completion = f"chatcmpl-{n:04d}"
                question = f"Question {n}: can I return a {NEEDLE if n == 7 else 'teapot'}?"
                session.add(Conversation(
                    id=completion, conversation_id=f"c{n}", api_key_id=chat.id,
                    requested_model="support", served_model="support-v2", stream=True,
                    status="cancelled" if n == 3 else "ok",
                    request={"messages": [{"role": "user", "content": question}]},
                    response=[{"content": f"Answer {n}."}], prompt_tokens=10,
                    completion_tokens=5, latency_ms=1234.5678,
                    created_at=NOW - timedelta(minutes=ITEMS - n)))  # fmt: skip
                session.add(ReviewItem(
                    completion_id=completion, alias="support", served_model="support-v2",
                    state="pending", reasons=[{"reason": "correction", "detail": {}}],
                    correction=f"Corrected {n}.",
                    created_at=NOW - timedelta(minutes=ITEMS - n)))  # fmt: skip
            for number, state in ((1, "retired"), (2, "live"), (4, "rolled_back")):
                session.add(AdapterVersion(
                    name=f"support-v{number}", alias="support", number=number,
                    sha256=str(number) * 64, rank=4, target_modules=["q_proj"], path="/x",
                    state=state))  # fmt: skip
            session.add(Alias(name="support", live_version="support-v2"))
            session.add(Alias(name="quiet"))
            # Promoted by hand at its first step: the case that read "Step 1 of 4 ... 100%".
            rollout = Rollout(alias="support", candidate="support-v2", baseline="support-v1",
                              state="promoted", steps=[10, 25, 50, 100], step=0, weight=1.0,
                              reason="promoted by an operator")  # fmt: skip
            session.add(rollout)
            await session.flush()
            session.add(RolloutEvent(rollout_id=rollout.id, kind="gate",
                                     detail={"p_value": 0.123456789, "passed": True}))  # fmt: skip
            arms = [{"name": name, "version": f"support-{name}", "retrieval": None,
                     "previous_state": "live"} for name in ("v1", "v2")]  # fmt: skip
            session.add(Experiment(
                alias="support", state="stopped", arms=arms, max_samples=100,
                reason="stopped by an operator", ends_at=NOW + timedelta(days=1),
                finished_at=NOW,
                results={"alpha": 0.016666666666666666, "min_samples": 20, "arms": {},
                         "comparisons": {}}))  # fmt: skip
            session.add(MonitorReport(
                alias="support", live_version="support-v2", computed_at=NOW,
                quality={"support-v2": {"requests": 1234, "errors": 2, "feedback": 40,
                                        "positive": 30, "negative": 10,
                                        "positive_ratio": 0.75, "grounded": 0,
                                        "groundedness": None, "idk_rate": 0.0333333}},
                drift={"centroid_distance": 0.0123456, "mmd": 0.2, "p_value": 0.0049999,
                       "n_reference": 200, "n_current": 200},
                drift_detected=True, triggers=["drift"]))  # fmt: skip
            session.add(TrainingRun(
                alias="support", state="rejected", trigger="new_examples", worker="w1",
                approved_examples=120, candidate="support-v3", report=REPORT,
                started_at=NOW - timedelta(minutes=50),
                finished_at=NOW - timedelta(minutes=8)))  # fmt: skip
        return {"admin": admin.key, "chat_id": chat.id}
    finally:
        await db.dispose()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Page, list[str]]]:
    """A signed-in console page in New York time, and the failed requests it made."""
    data_dir = tmp_path_factory.mktemp("console")
    database_url = f"sqlite+aiosqlite:///{data_dir / 'loragate.db'}"
    seeded = run(_seed(database_url))  # before Playwright, whose sync API holds the loop
    settings = load_settings(
        data_dir=data_dir, engine_mode="external", database_url=database_url,
        engine_urls=f"http://127.0.0.1:{free_port()}", log_format="text",
        monitor_interval_s=0,
    )  # fmt: skip
    gateway = ThreadedGateway.start(settings)
    failed: list[str] = []
    errors: list[str] = []

    def record(response: Response) -> None:
        if response.status >= 400:
            failed.append(f"{response.status} {response.url}")

    try:
        with chromium() as browser:
            context = browser.new_context(
                timezone_id=ZONE, locale="en-US", viewport={"width": 1280, "height": 900}
            )
            page = context.new_page()
            page.set_default_timeout(30_000)
            expect.set_options(timeout=30_000)
            page.on("response", record)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{gateway.base_url}/console")
            page.get_by_label("Admin API key").fill(seeded["admin"])
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator("#console")).to_be_visible()
            yield page, failed
            assert not errors, f"errors in the page: {errors}"
    finally:
        gateway.stop()


def _screenshot(page: Page, name: str) -> None:
    if os.environ.get("LORAGATE_UPDATE_SCREENSHOTS"):
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=DOCS_IMG / name, full_page=False)


def _tab(page: Page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def test_the_review_queue_pages_and_links_to_the_log(console: tuple[Page, list[str]]) -> None:
    page, _ = console
    _tab(page, "Review queue")
    expect(page.locator("#review-caption")).to_have_text(f"Items 1{DASH}25 of {ITEMS}")
    expect(page.locator("#review-rows tr")).to_have_count(25)
    expect(page.get_by_role("button", name="Previous page").first).to_be_disabled()
    first = page.locator('tr[data-completion-id="chatcmpl-0000"]')
    created = (NOW - timedelta(minutes=ITEMS)).astimezone(ZoneInfo(ZONE))
    expect(first.locator("time")).to_contain_text(created.strftime("%I:%M %p"))
    expect(first.locator("time")).to_contain_text(re.compile(r"E[SD]T"))
    _screenshot(page, "console-review.png")

    page.locator("#review-next").click()
    expect(page.locator("#review-caption")).to_have_text(f"Items 26{DASH}30 of {ITEMS}")
    expect(page.locator("#review-page")).to_have_text("Page 2 of 2")
    expect(page.locator("#review-next")).to_be_disabled()
    page.locator("#review-previous").click()
    expect(page.locator("#review-caption")).to_have_text(f"Items 1{DASH}25 of {ITEMS}")
    page.get_by_label("Per page").select_option("10")
    expect(page.locator("#review-caption")).to_have_text(f"Items 1{DASH}10 of {ITEMS}")
    expect(page.locator("#review-page")).to_have_text("Page 1 of 3")

    # From an item to its answer in the conversation log.
    item = page.locator('tr[data-completion-id="chatcmpl-0007"]')
    item.get_by_role("link", name="In the conversation log").click()
    expect(page.get_by_role("tab", name="Conversations")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#log-rows tr")).to_have_count(1)
    row = page.locator('#log-rows tr[data-completion-id="chatcmpl-0007"]')
    expect(row).to_contain_text(NEEDLE)
    expect(row).to_contain_text("1.23 s")  # 1234.5678 ms, formatted


def test_the_conversation_log_is_searched(console: tuple[Page, list[str]]) -> None:
    page, _ = console
    _tab(page, "Conversations")
    page.get_by_label("Find in the log").fill("")
    page.locator("#log-form").get_by_role("button", name="Find").click()
    expect(page.locator("#log-caption")).to_have_text(f"Answers 1{DASH}25 of {ITEMS}, newest first")
    expect(page.locator("#log-rows tr").first).to_have_attribute(
        "data-completion-id", f"chatcmpl-{ITEMS - 1:04d}"
    )
    page.get_by_label("Find in the log").fill(NEEDLE)
    page.locator("#log-form").get_by_role("button", name="Find").click()
    expect(page.locator("#log-rows tr")).to_have_count(1)
    page.get_by_label("Find in the log").fill("")
    page.locator("#log-status").select_option("cancelled")
    page.locator("#log-form").get_by_role("button", name="Find").click()
    expect(page.locator("#log-rows tr")).to_have_count(1)
    expect(page.locator("#log-rows tr")).to_have_attribute("data-completion-id", "chatcmpl-0003")
    page.locator("#log-status").select_option("")


def test_rollouts_and_experiments_read_right_and_a_quiet_alias_fails_nothing(
    console: tuple[Page, list[str]],
) -> None:
    page, failed = console
    _tab(page, "Rollouts")
    page.locator("#panel-rollouts").get_by_label("Alias").select_option("support")
    expect(page.locator("#rollout-state")).to_have_text("promoted")
    progress = page.locator("#rollout-progress")
    expect(progress).to_have_text("Promoted: support-v2 is live and takes all the traffic.")
    expect(page.locator("#rollout-card")).not_to_contain_text("Step 1 of 4")
    expect(page.locator("#rollout-history")).to_contain_text("p_value: 0.12; passed: true")
    expect(page.locator("#rollout-history")).not_to_contain_text("0.123456789")

    # A version rolled back before is offered again, and the question says so.
    picker = page.get_by_label("Candidate version")
    expect(picker.locator("option")).to_have_text(["support-v4 (rolled back: roll out again)"])
    page.get_by_role("button", name="Start rollout").click()
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_contain_text("support-v4 was rolled back. Roll it out again on support")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#rollout-state")).to_have_text("promoted")  # nothing was started

    page.locator("#panel-rollouts").get_by_label("Alias").select_option("quiet")
    expect(page.locator("#rollout-card")).to_contain_text("No rollout yet")

    _tab(page, "Experiments")
    page.locator("#panel-experiments").get_by_label("Alias").select_option("quiet")
    expect(page.locator("#experiment-card")).to_contain_text("No experiment yet")
    page.locator("#panel-experiments").get_by_label("Alias").select_option("support")
    card = page.locator("#experiment-card")
    expect(card).to_contain_text("Family-wise error 0.017,")
    expect(card).not_to_contain_text("0.01666")
    page.wait_for_timeout(2500)  # one refresh of the tab, which used to 404 on a quiet alias
    assert failed == [], failed


def test_quality_charts_have_a_time_axis_and_say_when_empty(
    console: tuple[Page, list[str]],
) -> None:
    page, _ = console
    _tab(page, "Quality")
    page.locator("#panel-quality").get_by_label("Alias").select_option("quiet")
    page.get_by_role("button", name="Show").click()
    charts = page.locator("#quality-charts figure")
    expect(charts).to_have_count(2)
    expect(charts.first.locator(".empty")).to_have_text("No traffic in this period.")
    expect(charts.first.locator(".time-axis text")).to_have_count(5)
    labels = charts.first.locator(".time-axis text").all_text_contents()
    assert all(re.fullmatch(r"\d\d:\d\d (AM|PM)", label) for label in labels), labels
    expect(page.locator("#monitor-report")).to_contain_text("No monitor report yet")
    page.locator("#panel-quality").get_by_label("Alias").select_option("support")
    page.get_by_role("button", name="Show").click()
    kpis = page.locator('#monitor-kpis tr[data-version="support-v2"]')
    expect(kpis).to_contain_text("1,234")
    expect(kpis).to_contain_text("75%")
    expect(kpis).to_contain_text("3%")  # the "I don't know" rate
    expect(page.locator("#monitor-drift")).to_contain_text("Drift detected:")
    expect(page.locator("#monitor-drift")).to_contain_text("p value: 0.005")
    expect(page.locator("#monitor-triggers")).to_have_text("Triggers: drift")
    # The last tick is now, on New York's clock.
    now = datetime.now(ZoneInfo(ZONE))
    assert labels[-1] in {(now - timedelta(minutes=m)).strftime("%I:%M %p") for m in (0, 1)}


def test_keys_show_their_limits_and_use(console: tuple[Page, list[str]]) -> None:
    page, _ = console
    _tab(page, "Keys and quotas")
    row = page.locator("#key-rows tr").filter(has_text="support-bot")
    expect(row).to_contain_text("chat")
    expect(row.locator("td").nth(6)).to_contain_text(re.compile(r"\d+ of 1,000"))
    expect(row.locator("td").nth(4)).to_contain_text("of 5,000")
    expect(row.locator("meter")).to_have_count(2)
    expect(page.locator("#key-rows tr").filter(has_text="ops")).to_contain_text("no limit")
    _screenshot(page, "console-keys.png")

    # A new key is shown once, then listed; revoked, it is marked so and refused.
    page.get_by_label("Name").fill("new-bot")
    page.get_by_label("Monthly tokens").fill("2000")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("New key (shown once: copy it now)")
    expect(secret).to_have_value(re.compile(r"^lg-\S{20,}$"))
    new = page.locator("#key-rows tr").filter(has_text="new-bot")
    expect(new.locator("td").nth(6)).to_contain_text("0 of 2,000")
    new.get_by_role("button", name="Revoke new-bot").click()
    page.locator("dialog#confirm").get_by_role("button", name="Confirm").click()
    expect(new).to_contain_text("revoked")
    expect(new.get_by_role("button", name="Revoke new-bot")).to_have_count(0)


def test_training_runs_show_the_gate(console: tuple[Page, list[str]]) -> None:
    page, _ = console
    _tab(page, "Training")
    row = page.locator('#training-rows tr[data-run-id="1"]')
    expect(row).to_contain_text("rejected")
    expect(row).to_contain_text("support-v3")
    expect(row).to_contain_text("42 min")
    expect(row).to_contain_text("failed (gain +0.012, probes -0.17)")
    row.locator("summary").click()
    table = row.locator("table.gate-table")
    expect(table.locator("tr").filter(has_text="Holdout accuracy")).to_contain_text("0.61")
    expect(table.locator("tr").filter(has_text="Probe accuracy")).to_contain_text("0.75")
    # Each form the gate asked its holdout in, candidate beside live (a dash: not asked).
    reworded = table.locator("tr").filter(has_text="holdout, reworded")
    expect(reworded).to_contain_text("0.65")
    expect(reworded).to_contain_text("0.55")
    expect(table.locator("tr").filter(has_text="holdout, closed book")).to_contain_text(DASH)
    expect(table).to_contain_text("Live (support-v2)")
    expect(row).to_contain_text("probe accuracy fell by 0.167")
    _screenshot(page, "console-training.png")
