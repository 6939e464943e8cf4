"""The console in a real headless Chromium: a commander triggers a playbook, two approvers on
their phones approve it, the commander watches the measure go live without reloading, renews it
and stands the incident down. Screenshots of each moment land in tests/artifacts/console/."""

# The house style puts the expected value first in asserts.

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from tests.conftest import Sandbox
from tests.web.conftest import Console

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"
PHONE = {"width": 375, "height": 740}
LAPTOP = {"width": 1280, "height": 900}
LIVE_S = 30_000  # ms: how long a page may take to show what the incident did

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"no Chromium at {CHROMIUM}: install the distribution's chromium package",
)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        await launched.close()


async def shot(page: Page, step: str) -> None:
    await page.screenshot(path=ARTIFACTS / f"{step}.png", full_page=True)


async def assert_fits(page: Page) -> None:
    """Nothing wider than the screen: no horizontal scrolling."""
    width, inner = await page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width <= inner, f"{page.url}: content {width}px wide on a {inner}px screen"


# Everything a thumb presses: buttons, form fields, and links styled or placed as controls.
TAP_TARGETS = (
    "button, a.button, .nav a, a.incident-id, select, textarea, "
    "input:not([type=hidden]):not([type=checkbox]), label.check"
)


async def assert_touchable(page: Page) -> None:
    """Every control at least 44 px high (and wide), so it can be hit on a phone at night."""
    small = await page.evaluate(
        """(selector) => [...document.querySelectorAll(selector)]
            .filter((el) => el.offsetParent !== null)
            .map((el) => [el.outerHTML.slice(0, 80), el.getBoundingClientRect()])
            .filter(([, box]) => box.height < 44 || box.width < 44)
            .map(([html, box]) => `${html} (${box.width | 0}x${box.height | 0})`)""",
        TAP_TARGETS,
    )
    assert [] == small, page.url


async def sign_in(context: BrowserContext, console: Console, token: str) -> Page:
    page = await context.new_page()
    await page.goto(f"{console.url}/console")
    await expect(page).to_have_url(re.compile(r"/console/sign-in\?next=/console$"))
    await page.fill("#token", token)
    await page.click("form button[type=submit]")
    await expect(page).to_have_url(f"{console.url}/console")
    return page


async def sign_out(page: Page) -> None:
    await page.click("form[action='/console/sign-out'] button")
    await expect(page.locator("[data-flash]")).to_have_text("signed out")


async def test_a_crisis_from_trigger_to_stand_down_in_the_browser(
    console: Console, sandbox: Sandbox, browser: Browser
) -> None:
    before = await sandbox.state()
    lena = console.tokens.issue("lena", "legal")

    # The commander, on a laptop: signs in, triggers the drill for France.
    commander = await browser.new_context(viewport=LAPTOP)
    page = await commander.new_page()
    await page.goto(f"{console.url}/console")
    await shot(page, "01-sign-in")
    await page.fill("#token", "crisis_not_a_token")
    await page.click("form button[type=submit]")
    await expect(page.locator("[data-error]")).to_have_text(
        "unknown token: check that you pasted all of it"
    )
    await page.fill("#token", console.tokens.token("alice"))
    await page.click("form button[type=submit]")
    await expect(page.locator("[data-principal]")).to_have_text("alice")
    await expect(page.locator("[data-roles]")).to_have_text("commander")
    await page.click("[data-trigger-link]")
    await expect(page.locator("[data-playbook='console-drill']")).to_be_visible()
    await shot(page, "02-playbook-picker")
    await page.click("[data-playbook='console-drill'] a.button")
    await expect(page.locator("#input-region")).to_have_value("GB")
    await expect(page.locator("#input-categories")).to_have_value("spam, scam")
    await page.fill("#input-region", "FR")
    await page.select_option("#level", "elevated")
    await shot(page, "03-trigger-form")
    await page.click("[data-trigger-form] button[type=submit]")
    await expect(page).to_have_url(re.compile(r"/console/incidents/INC-[0-9]{8}-"))
    incident_id = page.url.rsplit("/", 1)[1]
    await expect(page.locator("[data-flash]")).to_contain_text(f"as {incident_id}")
    throttle = page.locator("[data-step='throttle']")
    await expect(throttle).to_have_attribute("data-step-state", "awaiting_approval", timeout=LIVE_S)
    await expect(page.locator("[data-pending='throttle'] [data-approval-count]")).to_have_text(
        "0 of 2", timeout=LIVE_S
    )
    assert 0 == await page.locator("form[data-action='approve']").count()  # not her role
    await expect(page.locator("[data-delivery-state='failed']")).to_contain_text("FAILED")
    await shot(page, "04-incident-awaiting-approval")

    board = await commander.new_page()
    await board.goto(f"{console.url}/console")
    row = board.locator(f"[data-incident='{incident_id}']")
    await expect(row.locator("[data-pending='throttle']")).to_contain_text("0 of 2")
    await expect(row.locator("[data-measure='surge'] [data-countdown]")).to_contain_text("in ")
    await expect(row.locator("[data-failed-delivery]")).to_contain_text("FAILED")
    await shot(board, "05-board")

    # The approvers, on their phones, one after the other.
    approver = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    for step, (name, token, count) in enumerate(
        (("bob", console.tokens.token("bob"), "1 of 2"), ("lena", lena, "2 of 2")), start=6
    ):
        phone = await sign_in(approver, console, token)
        await expect(phone.locator("[data-principal]")).to_have_text(name)
        await assert_fits(phone)
        assert 0 == await phone.locator("[data-trigger-link]").count()
        await phone.click(f"a[href='/console/incidents/{incident_id}']")
        approve = phone.locator("form[data-action='approve']")
        await expect(approve).to_be_visible(timeout=LIVE_S)
        assert 0 == await phone.locator("#actions form").count()  # approving is all they may do
        await assert_fits(phone)
        await assert_touchable(phone)
        await approve.locator("input[name=comment]").fill(f"{name}: proportionate")
        await shot(phone, f"{step:02d}a-phone-{name}-approving")
        await approve.locator("button").click()
        await expect(phone.locator("[data-flash]")).to_contain_text(f"approved throttle: {count}")
        approved_by = phone.locator("[data-step='throttle'] [data-approved-by]")
        await expect(approved_by).to_contain_text(
            f"{name} ({'legal' if name == 'lena' else 'policy-lead'})"
        )
        assert 0 == await phone.locator("form[data-action='approve']").count()
        await assert_fits(phone)
        await shot(phone, f"{step:02d}b-phone-{name}-approved")
        await sign_out(phone)
        await phone.close()

    # The commander's pages, never reloaded, follow: the board refreshes itself, the incident
    # page shows the measure live with its countdown.
    await expect(row.locator("[data-measure='throttle'] [data-countdown]")).to_contain_text(
        "in ", timeout=LIVE_S
    )
    assert 0 == await row.locator("[data-pending]").count()
    await shot(board, "08a-board-refreshed")

    await expect(throttle).to_have_attribute("data-step-state", "applied", timeout=LIVE_S)
    measure = page.locator("[data-measure='throttle']")
    countdown = measure.locator("[data-countdown]")
    await expect(countdown).to_contain_text(re.compile(r"^in (1h 59m|2h 0m|2h)"), timeout=LIVE_S)
    await expect(page.locator("#timeline li", has_text="lena")).not_to_have_count(0)
    assert 0.5 == (await sandbox.state())["recommender"]["FR"]["spam"]["reach_multiplier"]
    await shot(page, "08b-measure-applied-live")

    # Renew it for three hours.
    first_expiry = datetime.fromisoformat(await countdown.get_attribute("datetime") or "")
    await measure.locator("input[name=duration]").fill("3h")
    await measure.locator("input[name=reason]").fill("still spreading")
    await measure.locator("button").click()
    await expect(page.locator("[data-flash]")).to_have_text("renewed throttle for 3h from now")
    renewed = page.locator("[data-measure='throttle'] [data-countdown]")
    await expect(renewed).to_contain_text(re.compile(r"^in (2h 59m|3h)"))
    later = datetime.fromisoformat(await renewed.get_attribute("datetime") or "")
    assert later > first_expiry
    await shot(page, "09-renewed")

    # Stand down, with a reason and the confirmation.
    stand_down = page.locator("form[data-action='stand-down']")
    await stand_down.locator("input[name=reason]").fill("disorder has subsided")
    await stand_down.locator("input[name=confirm]").check()
    await stand_down.locator("button").click()
    await expect(page.locator("[data-flash]")).to_contain_text(
        re.compile("stood down|standing down")
    )
    await expect(page.locator("[data-state]").first).to_have_text("closed", timeout=LIVE_S)
    for step_id in ("surge", "throttle"):
        await expect(page.locator(f"[data-step='{step_id}']")).to_have_attribute(
            "data-step-state", "undone"
        )
    await expect(page.locator("[data-no-measures]")).to_be_visible()
    await expect(page.locator("[data-stand-down]")).to_have_text("by alice: disorder has subsided")
    assert 0 == await page.locator("form[data-action]").count()
    await shot(page, "10-closed")
    after = await sandbox.state()
    assert before["recommender"] == after["recommender"]
    assert before["moderation"] == after["moderation"]

    await page.click("a[href$='/audit']")
    await expect(page.locator("[data-verdict]")).to_have_attribute("data-verdict", "ok")
    await shot(page, "11-audit")
    await commander.close()

    # The same pages at phone width: one column, nothing to scroll sideways.
    small = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    phone = await sign_in(small, console, console.tokens.token("alice"))
    for step, path in (
        ("12-phone-board", "/console?state=all"),
        ("13-phone-trigger-form", "/console/trigger/console-drill"),
        ("14-phone-incident", f"/console/incidents/{incident_id}"),
        ("15-phone-audit", f"/console/incidents/{incident_id}/audit"),
    ):
        await phone.goto(f"{console.url}{path}")
        await assert_fits(phone)
        await assert_touchable(phone)
        await shot(phone, step)
    await sign_out(phone)
    await assert_fits(phone)
    await small.close()
