"""The console in a real browser: headless Chromium (Debian's package, at /usr/bin/chromium)
driven by Playwright, at 1280x800 and at a phone's 390x844.

An operator finds the handler with dead letters, opens one and reads its traceback, replays it
and sees the count drop and the event handled, purges one with confirmation, and a hostile body
shows as text. Screenshots of the main pages go to the test's output folder; with
EVENTWORKER_SCREENSHOTS_TO_DOCS=1 they are copied to docs/images/ as well (the docs show them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from eventworker.console.app import create_app
from eventworker.handlers import handler
from eventworker.settings import Settings
from tests.support.broker import Broker, registrations, running, wait_for

CHROMIUM = Path("/usr/bin/chromium")
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
#: Read at import: the settings fixture clears EVENTWORKER_* from the environment.
TO_DOCS = os.environ.get("EVENTWORKER_SCREENSHOTS_TO_DOCS") == "1"
playwright = pytest.importorskip(
    "playwright.async_api", reason="Playwright is not installed (the test extra has it)"
)
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="no Chromium at /usr/bin/chromium (scripts/bootstrap.sh installs Debian's chromium)",
)


class Payment(BaseModel):
    """A payment to take for an order."""

    order_id: str
    amount: int


#: The events the handler took, by id: the ledger a replay shows up in.
LEDGER: list[str] = []
#: While true the handler fails, so its events are dead-lettered with a traceback.
FAILING = {"now": True}


@handler("payments.requested", name="take_payment", model=Payment, give_up_on=(RuntimeError,))
async def take_payment(event: Any, ctx: Any) -> None:
    """Takes a payment; fails while the payment service is down."""
    if FAILING["now"]:
        raise RuntimeError("payment service down")
    LEDGER.append(event.id)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[str]:
    """The console on a free local port, in this event loop."""
    import uvicorn

    app = create_app(settings, registrations(take_payment), allow_actions=True)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    await wait_for(lambda: server.started or task.done())
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def _taken(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("console-*.png"))


async def _screenshot(page: Any, out: Path, name: str) -> None:
    path = out / f"console-{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    if TO_DOCS:
        DOCS_IMAGES.mkdir(exist_ok=True)
        shutil.copyfile(path, DOCS_IMAGES / path.name)


@pytest.mark.timeout(180)
async def test_an_operator_finds_reads_replays_and_purges_dead_letters_in_a_browser(
    broker: Broker, settings: Settings, tmp_path: Path
) -> None:
    LEDGER.clear()
    FAILING["now"] = True
    fast = settings.model_copy(
        update={"console": settings.console.model_copy(update={"poll_interval": 0.5})}
    )
    async with running(broker, [take_payment], fast) as worker:
        dead = worker.routes[0].dead_letter_queue
        for n in (1, 2):
            await broker.publish(
                "payments.requested",
                f'{{"order_id": "o-{n}", "amount": {n * 100}}}'.encode(),
                message_id=f"pay-{n}",
                content_type="application/json",
            )
        hostile = '{"order_id": "<script>window.pwned = 1</script>", "amount": 1}'
        await broker.publish(
            "payments.requested",
            hostile.encode(),
            message_id="pay-hostile",
            content_type="application/json",
        )
        await broker.wait_count(dead, 3)
        async with (
            serving(fast) as base,
            playwright.async_playwright() as pw,
        ):
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            refused: list[str] = []
            page.on(
                "console",
                lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
            )
            # The handlers: the one with dead letters.
            await page.goto(base + "/")
            row = page.locator('tr[data-handler="take_payment"]')
            await playwright.expect(row.locator("td.dead")).to_contain_text("3")
            await _screenshot(page, tmp_path, "handlers")
            # Its dead letters, and one with its traceback.
            await row.locator("a").first.click()
            await playwright.expect(page.locator("#dead-count")).to_have_text("3")
            await _screenshot(page, tmp_path, "dead-letters")
            await page.locator("a.letter", has_text="pay-1").click()
            await playwright.expect(page.locator("pre.traceback")).to_contain_text(
                "RuntimeError: payment service down"
            )
            await _screenshot(page, tmp_path, "dead-letter")
            # Replay it, confirmed: the count drops and the handler takes it.
            FAILING["now"] = False
            await page.locator("#replay-this").click()
            await playwright.expect(page.locator(".confirm-what")).to_contain_text("1 dead letter")
            await _screenshot(page, tmp_path, "confirm")
            await page.locator("#confirm").click()
            await playwright.expect(page.locator("#job-state")).to_have_text("done")
            await playwright.expect(page.locator("#job-done")).to_have_text("1")
            await _screenshot(page, tmp_path, "job")
            await wait_for(lambda: "pay-1" in LEDGER, timeout=30)
            await broker.wait_count(dead, 2)
            await page.goto(base + "/handlers/take_payment")
            await playwright.expect(page.locator("#dead-count")).to_have_text("2")
            # The hostile body is text on the page, and ran nowhere.
            await page.locator("a.letter", has_text="pay-hostile").click()
            await playwright.expect(page.locator("pre.body")).to_contain_text(
                "<script>window.pwned = 1</script>"
            )
            assert await page.evaluate("typeof window.pwned") == "undefined"
            # Purge it, confirmed.
            await page.locator("#purge-this").click()
            await playwright.expect(page.locator(".confirm-what")).to_contain_text("deleted")
            await page.locator("#confirm").click()
            await playwright.expect(page.locator("#job-state")).to_have_text("done")
            await broker.wait_count(dead, 1)
            await page.goto(base + "/handlers/take_payment")
            await playwright.expect(page.locator("#dead-count")).to_have_text("1")
            await playwright.expect(page.locator("a.letter")).to_have_text(["pay-2"])
            await _screenshot(page, tmp_path, "after-purge")
            # The handlers page follows the broker without a reload: a new dead letter shows.
            await page.goto(base + "/")
            dead_cell = page.locator('tr[data-handler="take_payment"] td.dead')
            await playwright.expect(dead_cell).to_contain_text("1")
            FAILING["now"] = True
            await broker.publish(
                "payments.requested",
                b'{"order_id": "o-3", "amount": 300}',
                message_id="pay-3",
                content_type="application/json",
            )
            await playwright.expect(dead_cell).to_contain_text("2", timeout=20_000)
            await playwright.expect(
                page.locator('tr[data-handler="take_payment"]')
            ).to_contain_text("dead letters growing")
            # The catalogue and the workers.
            await page.goto(base + "/catalogue")
            await playwright.expect(page.locator("section.event")).to_contain_text(
                "payments.requested"
            )
            await playwright.expect(page.locator("section.event")).to_contain_text("take_payment")
            await _screenshot(page, tmp_path, "catalogue")
            await page.goto(base + "/workers")
            await playwright.expect(page.locator("tbody")).to_contain_text("consuming")
            await _screenshot(page, tmp_path, "workers")
            # A phone's width: every page fits, nothing to scroll sideways but the tables.
            phone = await browser.new_page(viewport={"width": 390, "height": 844})
            for path, name in (
                ("/", "phone-handlers"),
                ("/handlers/take_payment", "phone-dead-letters"),
                ("/handlers/take_payment/letter?id=pay-2", "phone-dead-letter"),
            ):
                await phone.goto(base + path)
                width = await phone.evaluate("document.documentElement.scrollWidth")
                assert width <= 390, f"{path} is {width}px wide on a 390px screen"
                await _screenshot(phone, tmp_path, name)
            await playwright.expect(phone.locator("pre.traceback")).to_contain_text(
                "payment service down"
            )
            await browser.close()
    assert LEDGER == ["pay-1"]
    assert not refused, refused
    assert _taken(tmp_path) == sorted(
        f"console-{n}.png"
        for n in (
            "handlers",
            "dead-letters",
            "dead-letter",
            "confirm",
            "job",
            "catalogue",
            "workers",
            "after-purge",
            "phone-handlers",
            "phone-dead-letters",
            "phone-dead-letter",
        )
    )
