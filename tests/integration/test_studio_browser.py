"""The Studio in a real browser (Debian's chromium, driven by Playwright) against the real stack: a
gateway with named keys, the services on the real broker, the activity recorder, stand-in models.

Sign in, compose a panel (one member answers with script), ask: each member's card, the analysis and
the fused answer appear; the activity page then lists the request, and its per-model costs add up to
its total; nothing the hostile answer carries runs, on either page (the DOM, a console listener, page
errors). With FUSION_STUDIO_SCREENSHOTS=<folder>, the pages are photographed there (the README's)."""

import os
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, expect

from fusion_testing.stack import Services

pytestmark = pytest.mark.kafka

PORT = 18090
RECORDER_HEALTH_PORT = 18186
KEY = "sk-studio-test-31f7c"
SCREENSHOTS = os.environ.get("FUSION_STUDIO_SCREENSHOTS")


@pytest.fixture(scope="module")
def studio(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    database = f"sqlite:///{tmp_path_factory.mktemp('studio') / 'activity.sqlite'}"
    env = {"FUSION_DATABASE_URL": database, "FUSION_HEALTH_PORT": str(RECORDER_HEALTH_PORT)}
    services.run("activity-studio", "activity", env, RECORDER_HEALTH_PORT)
    url = services.start_gateway(
        "gateway-studio",
        PORT,
        FUSION_DATABASE_URL=database,
        FUSION_GATEWAY_API_KEYS=f'{{"team-studio": "{KEY}"}}',
    )
    yield url
    for label in ("gateway-studio", "activity-studio"):
        services.stop(label)


class Watched:
    """What the page printed and threw, and everything a hostile script would have left behind."""

    def __init__(self, page: Page) -> None:
        self.console: list[str] = []
        self.errors: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _on_console(self, message: ConsoleMessage) -> None:
        self.console.append(message.text)

    def scripts_that_ran(self) -> list[str]:
        return [line for line in self.console if "XSS-" in line]


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 1400})
    opened = await context.new_page()
    yield opened
    await context.close()


async def sign_in(page: Page, studio: str) -> None:
    await page.goto(f"{studio}/studio")
    assert page.url.endswith("/studio/login")
    await page.fill("#key", "not the key")
    await page.click("#login-submit")
    await expect(page.get_by_test_id("login-error")).to_be_visible()
    await page.fill("#key", KEY)
    await page.click("#login-submit")
    await page.wait_for_url(f"{studio}/studio")
    await expect(page.get_by_test_id("key-name")).to_have_text("team-studio")
    assert KEY not in await page.content()


async def photograph(page: Page, name: str, full_page: bool = True) -> None:
    if SCREENSHOTS:
        await page.screenshot(path=str(Path(SCREENSHOTS) / name), full_page=full_page)


async def test_ask_a_composed_panel_then_find_it_in_the_activity(page: Page, studio: str) -> None:
    watched = Watched(page)
    await sign_in(page, studio)
    request_id, cost = await ask_a_composed_panel(page)
    await find_it_in_the_activity(page, studio, request_id, cost)

    assert watched.scripts_that_ran() == []
    assert watched.errors == []
    assert KEY not in await page.content()


async def ask_a_composed_panel(page: Page) -> tuple[str, str]:
    await expect(page.locator("#chat")).to_have_attribute("data-ready", "true")

    # Compose: two members (a plain one and one that answers with script), a judge.
    await page.check("#mode-custom")
    members = page.locator(".member-model")
    while await members.count() > 2:
        await page.locator(".remove-member").last.click()
    while await members.count() < 2:
        await page.click("#add-member")
    await members.nth(0).select_option("priced")
    await members.nth(1).select_option("xss")
    await page.select_option("#judge", "priced")
    await page.fill("#prompt", "Why is the sky blue? Answer in one sentence.")
    await expect(page.get_by_test_id("estimate")).to_have_attribute("data-state", "ready")
    await page.click("#send")

    turn = page.get_by_test_id("turn").last
    await expect(turn).to_have_attribute("data-state", "done", timeout=60_000)
    cards = turn.get_by_test_id("member-card")
    await expect(cards).to_have_count(2)
    assert [await cards.nth(i).get_attribute("data-model") for i in range(2)] == ["priced", "xss"]
    assert [await cards.nth(i).get_attribute("data-status") for i in range(2)] == ["ok", "ok"]
    await expect(cards.nth(1)).to_contain_text("Bold claim")
    await expect(turn.get_by_test_id("analysis")).to_have_attribute("data-state", "completed")
    answer = turn.get_by_test_id("fused-answer")
    await expect(answer).to_have_attribute("data-rendered", "true")
    assert (await answer.inner_text()).strip()
    cost = await turn.get_by_test_id("cost").get_attribute("data-cost-usd") or "0"
    assert Decimal(cost) > 0  # priced models: the sums below are not all zeros
    request_id = await turn.get_attribute("data-request-id")
    assert request_id
    await photograph(page, "studio-chat.png", full_page=False)  # the composer stays at the bottom

    # Nothing the hostile answer carried ran, and none of it is live markup.
    assert await page.evaluate("() => window.__xss") is None
    assert (
        await page.locator("[data-testid=member-card] script, [data-testid=member-card] img[onerror]").count()
        == 0
    )
    assert await page.locator("a[href^='javascript:']").count() == 0
    return request_id, cost


async def find_it_in_the_activity(page: Page, studio: str, request_id: str, cost: str) -> None:
    # The activity page lists it (once the recorder has it), with its per-model costs.
    # Listed once its result is recorded: the request itself may be recorded first, as pending.
    row = page.locator(f"[data-testid=activity-row][data-request-id='{request_id}'][data-status=complete]")
    for _ in range(60):
        await page.goto(f"{studio}/studio/activity")
        if await row.count():
            break
        await page.wait_for_timeout(500)
    await expect(row).to_have_count(1)
    await expect(page.get_by_test_id("cost-chart")).to_be_visible()
    await photograph(page, "studio-activity.png")

    await page.goto(f"{studio}/studio/activity/{request_id}")
    calls = page.get_by_test_id("call-row")
    roles = [await calls.nth(i).get_attribute("data-role") for i in range(await calls.count())]
    assert roles == ["member", "member", "judge"]
    costs = [Decimal(await calls.nth(i).get_attribute("data-cost-usd") or "x") for i in range(len(roles))]
    total = Decimal(await page.get_by_test_id("total-cost").get_attribute("data-cost-usd") or "x")
    assert sum(costs) == total == Decimal(cost)
    assert await page.get_by_test_id("unattributed-row").count() == 0
    await expect(page.get_by_test_id("member-answer").nth(1)).to_contain_text("Bold claim")
    await photograph(page, "studio-detail.png")

    assert await page.evaluate("() => window.__xss") is None
    assert await page.locator("main script, img[onerror]").count() == 0
