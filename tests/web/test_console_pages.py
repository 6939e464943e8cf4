"""The web console over real HTTP: signing in and out, pages that need a sign-in, the actions
each role is offered (and refused), the actor always the principal, cross-site posts refused."""

# The house style puts the expected value first in asserts.

from __future__ import annotations

import html as html_text
import re
import uuid
from pathlib import Path

import httpx
from temporalio.client import Client

from api.main import create_app
from core.settings import Settings
from engine.incidents import Incidents
from tests.api.conftest import Tokens
from tests.conftest import Sandbox
from tests.helpers import assert_eventually, serve_app
from tests.web.conftest import Console, ConsoleSession, write_library
from workflows.incident import LIFTED_UPDATE, LiftedNotice

ACTION_FORMS = ("approve", "reject", "escalate", "de-escalate", "renew", "note", "stand-down")


def actions_offered(html: str) -> set[str]:
    return set(re.findall(r'data-action="([a-z-]+)"', html))


def flash(html: str) -> str:
    found = re.search(r'data-flash="(?:ok|warning|error)">([^<]*)<', html)
    assert found is not None, "no flash message on the page"
    return html_text.unescape(found.group(1))


def one_line_error(html: str) -> str:
    found = re.search(r"data-error>([^<]*)<", html)
    assert found is not None, "no error line on the page"
    assert "\n" not in found.group(1)
    return html_text.unescape(found.group(1))


async def trigger(alice: ConsoleSession, **inputs: str) -> str:
    """Trigger the drill through the console form; the incident's id."""
    form = await alice.get("/console/trigger/console-drill")
    assert 200 == form.response.status_code, form.html
    fields = {f"input.{name}": value for name, value in inputs.items()}
    response = await alice.post("/console/trigger/console-drill", {"level": "elevated", **fields})
    assert 303 == response.status_code, response.text
    location = response.headers["location"]
    assert location.startswith("/console/incidents/INC-"), location
    return location.rsplit("/", 1)[1]


async def followed(session: ConsoleSession, response: httpx.Response) -> str:
    """The page a POST redirected to (POST/redirect/GET), with its flash."""
    assert 303 == response.status_code, response.text
    page = await session.get(response.headers["location"])
    assert 200 == page.response.status_code, page.html
    return page.html


async def test_sign_in_with_a_good_or_bad_token_and_sign_out(console: Console) -> None:
    """A valid token sets an HttpOnly, SameSite=Strict cookie and lands on the board, which names
    the principal and roles; a bad or revoked one is the form again with one line (401)."""
    revoked = console.tokens.issue("rita", "commander")
    console.tokens.store.revoke(revoked.split("_")[1])
    async with httpx.AsyncClient(base_url=console.url, timeout=30) as http:
        form = await http.get("/console/sign-in")
        assert 200 == form.status_code
        assert 'name="token"' in form.text and "width=device-width" in form.text
        for token, expected in (
            ("crisis_nope", "unknown token: check that you pasted all of it"),
            (revoked, "that token was revoked: ask an admin for a new one"),
            ("", "paste your API token to sign in"),
        ):
            refused = await http.post("/console/sign-in", data={"token": token})
            assert 401 == refused.status_code, token
            assert expected == one_line_error(refused.text)
            assert "crisis_token" not in refused.headers.get("set-cookie", "")

        signed = await http.post(
            "/console/sign-in",
            data={"token": console.tokens.token("alice"), "next": "/console/trigger"},
        )
        assert (303, "/console/trigger") == (signed.status_code, signed.headers["location"])
        cookie = signed.headers["set-cookie"].lower()
        for attribute in ("crisis_token=", "httponly", "samesite=strict", "path=/"):
            assert attribute in cookie, cookie
        assert "secure" not in cookie  # served over plain http here; over https it is Secure
        board = await http.get("/console")
        assert 200 == board.status_code
        assert re.search(r"data-principal>alice<", board.text)
        assert re.search(r"data-roles>commander<", board.text)
        assert "Content-Security-Policy" in board.headers

        # Only console pages of this site are places to return to.
        elsewhere = await http.post(
            "/console/sign-in",
            data={"token": console.tokens.token("alice"), "next": "https://evil.example/"},
        )
        assert "/console" == elsewhere.headers["location"]

        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', board.text)
        assert csrf is not None
        out = await http.post(
            "/console/sign-out", data={"csrf": csrf.group(1)}, headers={"Origin": console.url}
        )
        assert (303, "/console/sign-in") == (out.status_code, out.headers["location"])
        assert 'crisis_token="";' in out.headers["set-cookie"] or "max-age=0" in (
            out.headers["set-cookie"].lower()
        )
        after = await http.get("/console")
        assert 303 == after.status_code
        assert after.headers["location"].startswith("/console/sign-in")


async def test_sign_out_needs_the_forms_csrf_token(console: Console) -> None:
    """Signing out is a form like the others: without the session's CSRF token it is 403 and the
    session stays; the header's Sign out button sends the token."""
    async with console.session("alice") as alice:
        board = (await alice.get("/console")).html
        button = re.search(r'<form method="post" action="/console/sign-out".*?</form>', board, re.S)
        assert button is not None
        assert f'name="csrf" value="{alice.csrf}"' in button.group(0)
        for forged in ({"csrf": ""}, {"csrf": "0" * 64}):
            refused = await alice.post("/console/sign-out", forged, csrf=False)
            assert 403 == refused.status_code
            assert "the form is out of date" in one_line_error(refused.text)
            assert "crisis_token" not in refused.headers.get("set-cookie", "")
        assert 200 == (await alice.get("/console")).response.status_code  # still signed in
        out = await alice.post("/console/sign-out", {})
        assert (303, "/console/sign-in") == (out.status_code, out.headers["location"])
        assert 303 == (await alice.get("/console")).response.status_code


async def test_pages_send_the_signed_out_to_sign_in(console: Console) -> None:
    """Every page but sign-in and the static files redirects to sign-in, remembering where to go;
    an unknown cookie is dropped and the sign-in page says why."""
    async with httpx.AsyncClient(base_url=console.url, timeout=30) as http:
        root = await http.get("/")
        assert (307, "/console") == (root.status_code, root.headers["location"])
        for path in (
            "/console",
            "/console/trigger",
            "/console/trigger/console-drill",
            "/console/incidents/INC-X",
            "/console/incidents/INC-X/audit",
        ):
            response = await http.get(path)
            assert 303 == response.status_code, path
            assert f"/console/sign-in?next={path}" == response.headers["location"], path
        posted = await http.post("/console/incidents/INC-X/note", data={"text": "x"})
        assert (303, "/console/sign-in?next=/console") == (
            posted.status_code,
            posted.headers["location"],
        )
        css = await http.get("/console/static/console.css")
        assert (200, "text/css") == (css.status_code, css.headers["content-type"].split(";")[0])
        assert 404 == (await http.get("/console/static/secrets.txt")).status_code

        http.cookies.set("crisis_token", "crisis_bogus_token")
        stale = await http.get("/console")
        assert 303 == stale.status_code
        assert "crisis_token" in stale.headers.get_list("set-cookie")[0]
        sign_in = await http.get(stale.headers["location"])
        assert "signed out: unknown token" == flash(sign_in.text)


async def test_each_role_sees_exactly_its_actions(console: Console) -> None:
    """A commander may command but not approve this step; a policy lead may approve it and
    nothing else; an auditor and an engineer are offered no action; only a commander may
    trigger. Deliveries show as delivered with their message id, or FAILED with the reason."""
    async with (
        console.session("alice") as alice,
        console.session("bob") as bob,
        console.session("carol") as carol,
        console.session("erin") as erin,
    ):
        incident_id = await trigger(alice, region="FR", categories="spam, fraud")
        await console.status_when(incident_id, lambda s: s["throttle"] == "awaiting_approval")

        page = (await alice.incident(incident_id)).html
        assert {
            "escalate",
            "renew",
            "confirm-review",
            "note",
            "stand-down",
        } == actions_offered(page)
        assert 'data-step="throttle" data-step-state="awaiting_approval"' in page
        assert "0 of 2</b> approvals from policy-lead or legal" in page
        assert "region=FR" in page and "categories=spam, fraud" in page
        assert re.search(r'data-delivery="regulator/webhook" data-delivery-state="delivered"', page)
        assert re.search(r"delivered</span>, message id <code class=\"hash\">[^<—]+</code>", page)
        failed = re.search(
            r'data-delivery="regulator/slack" data-delivery-state="failed">'
            r".*?FAILED</span>: ([^<]+)",
            page,
            re.S,
        )
        assert failed is not None and "CONSOLE_DRILL_SLACK_URL_NOT_SET" in failed.group(1), page

        assert {"approve", "reject"} == actions_offered((await bob.incident(incident_id)).html)
        assert set() == actions_offered((await carol.incident(incident_id)).html)
        assert set() == actions_offered((await erin.incident(incident_id)).html)

        async def on_the_board() -> None:  # the board reads the store, a moment behind
            # By playbook, as in test_board_filters_by_state_and_playbook_and_pages below.
            board = (await alice.get("/console?playbook=console-drill")).html
            assert "data-trigger-link" in board
            assert f'data-incident="{incident_id}"' in board
            assert 'data-pending="throttle">Approval waiting: <b>throttle</b> 0 of 2' in board
            assert "Delivery FAILED: tell-regulator → regulator (slack)" in board

        await assert_eventually(on_the_board)
        for reader in (bob, carol, erin):
            assert "data-trigger-link" not in (await reader.get("/console")).html, reader.name
        library = await erin.get("/console/trigger")  # readable by all, without its buttons
        assert 200 == library.response.status_code
        assert 'data-playbook="console-drill"' in library.html
        assert 'href="/console/trigger/console-drill"' not in library.html
        refused = await erin.get("/console/trigger/console-drill")
        assert 403 == refused.response.status_code
        assert "erin (roles: engineer) may not command incidents" in one_line_error(refused.html)

        # Once bob has approved, his buttons are gone; alice still has none for this step.
        done = await followed(
            bob,
            await bob.post(
                f"/console/incidents/{incident_id}/approve",
                {
                    "step_id": "throttle",
                    "comment": "proportionate",
                },
            ),
        )
        assert "approved throttle: 1 of 2" == flash(done)
        assert set() == actions_offered(done)
        assert "You approved this step." in done
        again = await bob.post(
            f"/console/incidents/{incident_id}/approve", {"step_id": "throttle", "comment": "sure"}
        )
        assert 409 == again.status_code, again.text
        assert f"incident {incident_id}: bob has already approved throttle" == flash(again.text)
        await _stand_down(alice, incident_id)


async def test_posts_without_permission_are_refused(console: Console) -> None:
    """A principal lacking the permission or role gets 403 with one line, and nothing happens."""
    async with (
        console.session("alice") as alice,
        console.session("carol") as carol,
        console.session("erin") as erin,
    ):
        incident_id = await trigger(alice)
        await console.status_when(incident_id, lambda s: s["throttle"] == "awaiting_approval")
        await carol.incident(incident_id)
        await erin.get("/console")
        cases = [
            (carol, "stand-down", {"reason": "x", "confirm": "yes"}, "may not command incidents"),
            (carol, "note", {"text": "x"}, "may not command incidents"),
            (erin, "escalate", {"reason": "x"}, "may not command incidents"),
            (carol, "approve", {"step_id": "throttle"}, "holds no role that may approve throttle"),
            (alice, "approve", {"step_id": "throttle"}, "holds no role that may approve throttle"),
            (alice, "reject", {"step_id": "throttle", "reason": "x"}, "may reject throttle"),
        ]
        for session, action, form, fragment in cases:
            await session.incident(incident_id)
            response = await session.post(f"/console/incidents/{incident_id}/{action}", form)
            assert 403 == response.status_code, (session.name, action)
            assert fragment in one_line_error(response.text), (session.name, action)
        trigger_attempt = await erin.post("/console/trigger/console-drill", {"level": "elevated"})
        assert 403 == trigger_attempt.status_code
        status = await console.status_when(
            incident_id, lambda s: s["throttle"] == "awaiting_approval"
        )
        assert ("running", [], []) == (status["state"], status["notes"], status["level_history"])
        await _stand_down(alice, incident_id)


async def test_the_actor_is_the_principal_whatever_the_form_says(console: Console) -> None:
    """A form field named `actor` is ignored: the audit trail names the signed-in principal."""
    async with console.session("alice") as alice:
        incident_id = await trigger(alice)
        await alice.incident(incident_id)
        noted = await alice.post(
            f"/console/incidents/{incident_id}/note",
            {"text": "called the regulator", "actor": "mallory"},
        )
        assert "note added" == flash(await followed(alice, noted))

        async def noted_by_alice() -> list[dict]:
            events = await console.audit_events(incident_id)
            assert [("alice", "called the regulator")] == [
                (e["actor"], e["data"]["text"]) for e in events if e["kind"] == "note.added"
            ]
            return events

        events = await assert_eventually(noted_by_alice)
        assert "mallory" not in {e["actor"] for e in events}
        await _stand_down(alice, incident_id)
        closing = [
            e
            for e in await console.audit_events(incident_id)
            if e["kind"] == "stand_down.requested"
        ]
        assert ["alice"] == [e["actor"] for e in closing]


async def test_cross_site_and_forged_posts_are_refused(console: Console) -> None:
    """A POST carrying the cookie from another site's page is 403, as is one without the
    session's CSRF token; nothing happens. Signing in from another site is refused too."""
    async with console.session("alice") as alice:
        incident_id = await trigger(alice)
        await console.status_when(incident_id, lambda s: s["throttle"] == "awaiting_approval")
        await alice.incident(incident_id)
        path = f"/console/incidents/{incident_id}/note"
        cross = await alice.post(path, {"text": "forged"}, origin="http://evil.example")
        assert 403 == cross.status_code
        assert "cross-site request refused" in one_line_error(cross.text)
        no_token = await alice.post(path, {"text": "forged"}, csrf=False)
        assert 403 == no_token.status_code
        assert "the form is out of date" in one_line_error(no_token.text)
        wrong = await alice.post(path, {"text": "forged", "csrf": "0" * 64}, csrf=False)
        assert 403 == wrong.status_code
        login = await alice.http.post(
            "/console/sign-in",
            data={"token": console.tokens.token("bob")},
            headers={"Origin": "http://evil.example"},
        )
        assert 403 == login.status_code
        assert [] == [
            e for e in await console.audit_events(incident_id) if e["kind"] == "note.added"
        ]
        assert "alice" in (await alice.get("/console")).html  # still alice, not bob
        await _stand_down(alice, incident_id)


async def test_trigger_form_from_the_playbook_inputs(console: Console) -> None:
    """Fields follow the inputs' types with defaults filled in (lists comma-separated); a bad
    value is one line above the form (422) with what was typed kept."""
    async with console.session("alice") as alice:
        picker = (await alice.get("/console/trigger")).html
        assert 'href="/console/trigger/console-drill"' in picker
        form = (await alice.get("/console/trigger/console-drill")).html
        assert 'name="input.region" type="text" value="GB"' in form
        assert 'name="input.categories" type="text" value="spam, scam"' in form
        assert re.search(r'name="input.reach" type="number" step="any"[^>]*value="0.5"', form)
        assert "Region code where the crisis is" in form
        assert '<option value="elevated" selected>' in form
        # The hash as the CLI and the protocol document show it: twelve hex digits.
        assert re.search(r'class="hash">sha256:[0-9a-f]{12}…</code>', form)
        bad = await alice.post(
            "/console/trigger/console-drill",
            {"input.region": "DE", "input.reach": "lots", "level": "severe"},
        )
        assert 422 == bad.status_code
        assert "input 'reach': expected number, got 'lots'" == one_line_error(bad.text)
        assert 'name="input.region" type="text" value="DE"' in bad.text
        assert '<option value="severe" selected>' in bad.text
        unknown_level = await alice.post("/console/trigger/console-drill", {"level": "apocalyptic"})
        assert 422 == unknown_level.status_code
        assert "unknown level 'apocalyptic'" in one_line_error(unknown_level.text)
        missing = await alice.get("/console/trigger/no-such-playbook")
        assert 404 == missing.response.status_code


async def test_trigger_form_refuses_an_unknown_input_and_defaults_a_cleared_one(
    console: Console,
) -> None:
    """A field the playbook has no input for is refused as the JSON API refuses it (422, the form
    again with what was typed), not dropped; a cleared field takes the input's default, and a
    field of blanks is refused as blank, as the CLI and the API refuse it."""
    async with console.session("alice") as alice:
        await alice.get("/console/trigger/console-drill")
        unknown = await alice.post(
            "/console/trigger/console-drill",
            {"level": "elevated", "input.region": "DE", "input.zzz": "1"},
        )
        assert 422 == unknown.status_code, unknown.text
        expected = (
            "unknown input 'zzz' for playbook console-drill (inputs: categories, reach, region)"
        )
        assert expected == one_line_error(unknown.text)
        assert 'name="input.region" type="text" value="DE"' in unknown.text
        async with console.api() as api:
            body = {"playbook": "console-drill", "inputs": {"zzz": "1"}}
            refused = await api.post("/v1/incidents", json=body)
            assert (422, expected) == (refused.status_code, refused.json()["error"]["message"])

        blank = await alice.post(
            "/console/trigger/console-drill", {"level": "elevated", "input.region": "  "}
        )
        assert (422, "input 'region' is blank") == (blank.status_code, one_line_error(blank.text))

        incident_id = await trigger(alice, region="")
        async with console.api() as api:
            status = (await api.get(f"/v1/incidents/{incident_id}")).json()
        assert "GB" == status["inputs"]["region"]
        await _stand_down(alice, incident_id)


async def test_commander_actions_redirect_back_with_what_happened(console: Console) -> None:
    """Approvals from two distinct approvers apply the measure; renew, escalate, review and stand
    down each say in one line what they did, and a refusal says why on the page again (422),
    its form still holding what was typed."""
    lena = console.tokens.issue("lena", "legal")
    async with (
        console.session("alice") as alice,
        console.session("bob") as bob,
        console.session("lena", lena) as legal,
    ):
        incident_id = await trigger(alice)
        base = f"/console/incidents/{incident_id}"
        await console.status_when(incident_id, lambda s: s["throttle"] == "awaiting_approval")
        await bob.incident(incident_id)
        await followed(bob, await bob.post(f"{base}/approve", {"step_id": "throttle"}))
        await legal.incident(incident_id)
        approved = await followed(
            legal, await legal.post(f"{base}/approve", {"step_id": "throttle"})
        )
        assert "approved throttle: 2 of 2: quorum reached, it runs now" == flash(approved)
        await console.status_when(incident_id, lambda s: s["throttle"] == "applied")

        page = (await alice.incident(incident_id)).html
        assert 'data-measure="throttle"' in page
        refused = True
        for action, form, expected, was_refused in (
            (
                "renew",
                {"step_id": "throttle", "duration": "a while", "reason": "hot spot"},
                "invalid duration 'a while'",
                refused,
            ),
            (
                "renew",
                {"step_id": "throttle", "duration": "3h", "reason": ""},
                "renew: a reason to renew is required",
                refused,
            ),
            (
                "renew",
                {"step_id": "throttle", "duration": "3h", "reason": "hot"},
                "renewed throttle for 3h from now",
                not refused,
            ),
            (
                "escalate",
                {"reason": "spreading", "to_level": "severe"},
                "escalated to severe",
                not refused,
            ),
            (
                "confirm-review",
                {"note": "still needed"},
                "review confirmed: the next is due",
                not refused,
            ),
            (
                "stand-down",
                {"reason": "calm & <quiet>"},
                "stand-down: tick the box to confirm",
                refused,
            ),
        ):
            await alice.incident(incident_id)
            response = await alice.post(f"{base}/{action}", form)
            if not was_refused:
                shown = flash(await followed(alice, response))
            else:
                assert 422 == response.status_code, response.text
                shown = flash(response.text)
                for value in (v for k, v in form.items() if v and k != "step_id"):
                    assert f'value="{html_text.escape(value)}" data-typed' in response.text
            assert expected in shown, (action, shown)
        status = await _stand_down(alice, incident_id)
        assert {"surge": "undone", "throttle": "undone"} == {
            s["id"]: s["state"] for s in status["steps"] if s["id"] in ("surge", "throttle")
        }
        closed = (await alice.incident(incident_id)).html
        assert set() == actions_offered(closed)
        assert "data-state>closed<" in closed
        assert "data-no-measures" in closed


async def test_board_filters_by_state_and_playbook_and_pages(console: Console) -> None:
    """Open incidents by default; closed ones under Closed; a playbook filter; pages link to
    their neighbours, keeping the filters."""
    async with console.session("alice") as alice:
        incident_id = await trigger(alice)
        await console.status_when(incident_id, lambda s: s["throttle"] == "awaiting_approval")
        mark = f'data-incident="{incident_id}"'

        async def listed(query: str) -> bool:
            page = await alice.get(f"/console?{query}")
            assert 200 == page.response.status_code, page.html
            return mark in page.html

        # Every listing that must show it names its playbook: tests on the time-skipping server
        # share the store, and their incidents, triggered days "later", would fill the first page.
        async def open_on_the_board() -> None:  # the board reads the store, a moment behind
            assert await listed("playbook=console-drill")  # the default state: open

        await assert_eventually(open_on_the_board)
        assert await listed("state=open&playbook=console-drill")
        assert not await listed("state=closed")
        assert not await listed("playbook=other-playbook")
        await _stand_down(alice, incident_id)

        async def closed_on_the_board() -> None:  # the board reads the store, a moment behind
            assert await listed("state=closed&playbook=console-drill")

        await assert_eventually(closed_on_the_board)
        assert not await listed("state=open")
        assert await listed("state=all&playbook=console-drill")
        assert await listed("state=bogus&offset=x") is False  # unknown filters: the open list
        assert await listed("state=bogus&offset=%C2%B2") is False  # "²": a digit int() refuses
        far = (await alice.get("/console?state=all&playbook=console-drill&offset=50")).html
        assert "No all incidents of console-drill." in far
        assert 'href="/console?state=all&amp;playbook=console-drill&amp;offset=25">Newer' in far


async def test_a_stand_down_that_could_not_undo_a_measure_says_so_everywhere(
    console: Console, sandbox: Sandbox
) -> None:
    """The platform refuses the surge's undo for good: the flash names it NOT RESTORED instead of
    "every measure is undone", the incident page flags it with a way to restore it, the open
    board lists the incident with it; a retried undo that fails again says so, and a restore
    recorded by hand closes the incident."""
    async with console.session("alice") as alice:
        incident_id = await trigger(alice)
        await console.status_when(incident_id, lambda s: s["surge"] == "applied")
        await sandbox.fault(path_prefix="/moderation", operation_prefix="undo-", status=400)
        try:
            await alice.incident(incident_id)
            response = await alice.post(
                f"/console/incidents/{incident_id}/stand-down",
                {"reason": "test over", "confirm": "yes"},
            )
            shown = flash(await followed(alice, response))
            assert shown.startswith("standing down, but 1 measure was NOT RESTORED"), shown
            assert "surge (moderation.surge: " in shown, shown
            page = await alice.incident(incident_id)
            assert "data-state>standing down<" in page.html
            assert 'data-not-restored="surge"' in page.html and 'data-action="restore"' in page.html
            assert "data-no-measures" not in page.html  # it may still be in force

            async def on_the_open_board() -> None:  # the board reads the store, a moment behind
                board = (await alice.get("/console")).html
                assert incident_id in board and "NOT RESTORED: <b>surge</b>" in board

            await assert_eventually(on_the_open_board)
            retried = await alice.post(
                f"/console/incidents/{incident_id}/restore",
                {"step_id": "surge", "reason": "platform is back?", "by_hand": "no"},
            )
            shown = flash(await followed(alice, retried))
            assert shown.startswith("the undo of surge failed again: "), shown
        finally:
            await sandbox.clear_faults()
        by_hand = await alice.post(
            f"/console/incidents/{incident_id}/restore",
            {"step_id": "surge", "reason": "restored in the admin tool", "by_hand": "yes"},
        )
        shown = flash(await followed(alice, by_hand))
        assert "surge recorded as restored by hand (now undone)" == shown
        await console.status_when(incident_id, lambda s: s["surge"] == "undone")
        page = await alice.incident(incident_id)
        assert 'data-not-restored="surge"' not in page.html


async def test_audit_page_shows_the_verdict_and_the_report(console: Console) -> None:
    """Anyone who may read (an auditor first) sees the chain, seals and replay verdict, and the
    report opens with the console's cookie."""
    async with console.session("alice") as alice, console.session("carol") as carol:
        incident_id = await trigger(alice)
        await console.status_when(incident_id, lambda s: s["throttle"] == "awaiting_approval")
        await _stand_down(alice, incident_id)
        audit = await carol.get(f"/console/incidents/{incident_id}/audit")
        assert 200 == audit.response.status_code, audit.html
        assert 'data-verdict="ok"' in audit.html
        for check in ("chain", "seals", "replay"):
            assert re.search(rf'data-check="{check}" class="ok">ok', audit.html), check
        link = f'href="/v1/incidents/{incident_id}/report?format=html"'
        assert link in audit.html
        report = await carol.http.get(f"/v1/incidents/{incident_id}/report?format=html")
        assert 200 == report.status_code and incident_id in report.text
        missing = await carol.get("/console/incidents/INC-NOPE/audit")
        assert 404 == missing.response.status_code
        assert "no audit trail for incident INC-NOPE" == one_line_error(missing.html)


async def test_the_console_is_not_in_the_api_document(console: Console) -> None:
    async with console.api() as api:
        paths = (await api.get("/openapi.json")).json()["paths"]
    assert [] == [path for path in paths if not path.startswith("/v1/")]


async def _stand_down(alice: ConsoleSession, incident_id: str) -> dict:
    await alice.incident(incident_id)
    response = await alice.post(
        f"/console/incidents/{incident_id}/stand-down", {"reason": "test over", "confirm": "yes"}
    )
    shown = flash(await followed(alice, response))
    assert shown.startswith(("stood down: every measure", "standing down: the measures")), shown

    async def closed() -> dict:
        page = await alice.incident(incident_id)
        assert "data-state>closed<" in page.html
        return {"steps": _steps(page.html)}

    return await assert_eventually(closed, timeout=30)


def _steps(html: str) -> list[dict[str, str]]:
    return [
        {"id": step_id, "state": state}
        for step_id, state in re.findall(r'data-step="([^"]+)" data-step-state="([^"]+)"', html)
    ]


async def test_a_measure_another_incidents_restore_lifted_is_flagged(
    console: Console, client: Client
) -> None:
    """When an earlier incident's restore lifted a measure and putting it back is left to
    commanders (that incident sends this update), the incident page and the board say so."""
    async with console.session("alice") as alice:
        incident_id = await trigger(alice)
        await console.status_when(incident_id, lambda s: s["surge"] == "applied")
        notice = LiftedNotice(
            incident_id="INC-EARLIER",
            step_id="cut",
            reason="expiry reached",
            steps=["surge", "tell-regulator"],  # a notification is no measure: not marked
            why="more than one later incident holds measures on these settings",
        )
        await client.get_workflow_handle(incident_id).execute_update(LIFTED_UPDATE, notice)

        page = await alice.incident(incident_id)
        assert 1 == page.html.count('data-lifted-by="INC-EARLIER"')
        assert "Putting it back is left to you" in page.html

        async def flagged_on_the_board() -> None:  # the board reads the store, a moment behind
            board = (await alice.get("/console")).html
            assert 'data-measure="surge" data-lifted-by="INC-EARLIER"' in board

        await assert_eventually(flagged_on_the_board)
        async with console.api() as api:
            status = (await api.get(f"/v1/incidents/{incident_id}")).json()
        assert {"surge": "INC-EARLIER"} == {
            s["id"]: s["lifted_by"] for s in status["steps"] if s["lifted_by"]
        }
        steps = (await _stand_down(alice, incident_id))["steps"]
        assert "undone" == next(s["state"] for s in steps if s["id"] == "surge")
        assert "data-lifted-by" not in (await alice.incident(incident_id)).html


async def test_a_trigger_no_worker_will_run_yet_warns_the_commander(
    settings: Settings, tokens: Tokens, tmp_path: Path
) -> None:
    """A console whose workers run elsewhere, none running: the trigger is kept and the commander
    is told at once, in a warning, that nothing happens until a worker polls the task queue."""
    served = settings.model_copy(
        update={
            "playbooks_dir": write_library(tmp_path / "library"),
            "api_embedded_worker": False,
        }
    )
    with serve_app(create_app(served)) as url:
        console = Console(url=url, tokens=tokens, settings=served)
        async with console.session("alice") as alice:
            form = await alice.get("/console/trigger/console-drill")
            assert 200 == form.response.status_code, form.html
            response = await alice.post("/console/trigger/console-drill", {"level": "elevated"})
            assert 303 == response.status_code, response.text
            # The incident's own page needs a worker to answer its status: it says why not.
            page = await alice.get(response.headers["location"])
    html = page.html
    assert 504 == page.response.status_code, html
    assert "cannot answer: no worker has polled" in html_text.unescape(html)
    assert 'data-flash="warning"' in html
    message = flash(html)
    assert message.startswith("triggered console-drill v1 as INC-"), message
    assert repr(settings.task_queue) in message and "starts once one polls" in message


async def test_the_second_box_forces_the_stand_down_and_says_so(
    console: Console, client: Client
) -> None:
    """Ticked, the force box reaches the incident: its stand-down is recorded as forced."""
    async with console.session("alice") as alice:
        incident_id = await trigger(alice, region=f"Z{uuid.uuid4().hex[:3].upper()}")
        await alice.incident(incident_id)
        response = await alice.post(
            f"/console/incidents/{incident_id}/stand-down",
            {"reason": "test over", "confirm": "yes", "force": "yes"},
        )
        assert 303 == response.status_code, response.text
    status = await Incidents(client, console.settings).status(incident_id)
    assert status.stand_down is not None and status.stand_down.force
