"""The drop-in widget: its webassets bundle, the Jinja helper, and the element in Chromium."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, render_template_string
from markupsafe import Markup
from playwright.sync_api import Page, Request, Route, expect

from flask_finconn.assets import build_directory
from flask_finconn.testing import sandbox_of

BUTTON = "finconn-connect button"
STATIC = Path(__file__).parent.parent / "flask_finconn" / "static" / "finconn"


def events(page: Page) -> list[dict[str, Any]]:
    return page.evaluate("window.__events")  # type: ignore[no-any-return]


def outcome(page: Page) -> dict[str, Any]:
    """The success, exit or error event that ended the flow."""
    page.wait_for_function("window.__events.some(e => !e.type.endsWith('-start'))")
    return next(e for e in events(page) if not e["type"].endswith("-start"))


def session_posts(page: Page) -> list[Request]:
    posts: list[Request] = []
    page.on(
        "request",
        lambda r: posts.append(r) if r.method == "POST" and r.url.endswith("/sessions") else None,
    )
    return posts


def close_modal(page: Page) -> None:
    expect(page.locator(".dialog[data-step='consent']")).to_be_visible()
    page.get_by_role("button", name="Close").first.click()


def link_test_bank(page: Page) -> None:
    page.get_by_role("button", name="Agree and continue").click()
    page.locator("[data-institution='test_nonoauth']").click()
    page.get_by_label("Username").fill("jenny")
    page.get_by_label("Password").fill("pw")
    page.get_by_role("button", name="Log in", exact=True).click()
    page.get_by_role("button", name="Link accounts").click()
    page.get_by_role("button", name="Done").click()


# -- the Jinja helper and the bundle ---------------------------------------------------------


def test_scripts_helper_emits_versioned_urls_and_the_nonce(widget_app: Flask) -> None:
    with widget_app.test_request_context("/"):
        html = render_template_string("{{ finconn.scripts(nonce='n0nce') }}")
    css, js = html.splitlines()
    assert re.fullmatch(
        r'<link rel="stylesheet" href="/finconn/assets/finconn-connect\.[0-9a-f]{8}\.css" '
        r'nonce="n0nce">',
        css,
    )
    assert re.fullmatch(
        r'<script src="/finconn/assets/finconn-connect\.[0-9a-f]{8}\.js" '
        r'data-endpoint="/finconn" '
        r'data-payments="/finconn/assets/finconn-payments\.[0-9a-f]{8}\.js" '
        r'data-payments-css="/finconn/assets/finconn-payments\.[0-9a-f]{8}\.css" '
        r'defer nonce="n0nce"></script>',
        js,
    )


def test_scripts_helper_follows_the_script_root(widget_app: Flask) -> None:
    with widget_app.test_request_context("/", base_url="http://localhost/app"):
        html = render_template_string("{{ finconn.scripts() }}{{ finconn.button() }}")
    assert 'href="/app/finconn/assets/' in html
    assert 'data-endpoint="/app/finconn"' in html
    assert "nonce" not in html
    assert '<finconn-connect endpoint="/app/finconn">Link your bank</finconn-connect>' in html


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (
            'finconn.button("Connect")',
            '<finconn-connect endpoint="/finconn">Connect</finconn-connect>',
        ),
        (
            'finconn.button("<b>Bank</b>", permissions=["balances", "ownership"], disabled=True)',
            '<finconn-connect permissions="balances ownership" disabled endpoint="/finconn">'
            "&lt;b&gt;Bank&lt;/b&gt;</finconn-connect>",
        ),
        (
            'finconn.button(label, class_="cta", data_track="link", endpoint="/api/fc")',
            '<finconn-connect class="cta" data-track="link" endpoint="/api/fc">'
            "<b>Bank</b></finconn-connect>",
        ),
        (
            'finconn.button("Go", id="x\\" onclick=\\"alert(1)")',
            '<finconn-connect id="x&#34; onclick=&#34;alert(1)" endpoint="/finconn">Go'
            "</finconn-connect>",
        ),
    ],
)
def test_button_helper_renders_the_element(widget_app: Flask, call: str, expected: str) -> None:
    with widget_app.test_request_context("/"):
        html = render_template_string("{{ " + call + " }}", label=Markup("<b>Bank</b>"))
    assert html == expected


def test_bundles_are_served_minified_with_a_long_cache(widget_app: Flask) -> None:
    client = widget_app.test_client()
    with widget_app.test_request_context("/"):
        helper = widget_app.jinja_env.globals["finconn"]
        js_url, css_url = helper.js_url, helper.css_url  # type: ignore[attr-defined]
    with client.get(js_url) as js:
        source = js.get_data(as_text=True)
    assert js.status_code == 200
    assert js.mimetype == "text/javascript"
    assert "immutable" in js.headers["Cache-Control"]
    assert "customElements" in source
    assert "\n  " not in source  # minified: no indented lines
    assert "Flow: POST" not in source  # comments stripped
    with client.get(css_url) as css:
        style = css.get_data(as_text=True)
    assert css.mimetype == "text/css"
    assert "--finconn-button-background" in style
    assert "/*" not in style
    assert str(widget_app.instance_path) in helper.directory  # type: ignore[attr-defined]
    assert client.get("/finconn/assets/nothing.js").status_code == 404


def test_assets_build_elsewhere_when_the_instance_folder_is_not_writable(
    widget_app: Flask, tmp_path: Any
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    widget_app.instance_path = str(blocker / "instance")  # cannot be created: parent is a file
    directory = build_directory(widget_app)
    assert not directory.startswith(str(tmp_path))
    assert "flask-finconn-assets" in directory


# -- the element in a browser ----------------------------------------------------------------


def test_linking_under_a_strict_csp_with_a_nonce(widget_page: Page) -> None:
    widget_page.add_init_script(
        "window.__csp = []; document.addEventListener('securitypolicyviolation',"
        " (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    widget_page.goto("/?nonce=r4nd0m")
    widget_page.locator(BUTTON).click()
    link_test_bank(widget_page)
    # Polling predicates need eval, which this CSP forbids: wait on the live region instead.
    expect(widget_page.get_by_role("status")).to_have_text("2 accounts linked.")
    assert events(widget_page)[-1]["type"] == "finconn-connect-success"
    stand_in_nonce = widget_page.evaluate(
        "document.querySelector('script[src$=\"/sandbox/stripe.js\"]').nonce"
    )
    assert stand_in_nonce == "r4nd0m"
    assert widget_page.evaluate("window.__csp") == []


def test_events_carry_json_details_and_busy_state(widget_page: Page) -> None:
    widget_page.goto("/")
    element = widget_page.locator("finconn-connect")
    expect(element).not_to_have_attribute("aria-busy", "true")
    widget_page.locator(BUTTON).click()
    expect(element).to_have_attribute("aria-busy", "true")
    expect(widget_page.locator(BUTTON)).to_have_attribute("aria-disabled", "true")
    close_modal(widget_page)
    assert outcome(widget_page) == {
        "type": "finconn-connect-exit",
        "detail": {"reason": "cancelled"},
    }
    assert events(widget_page)[0] == {
        "type": "finconn-connect-start",
        "detail": {"permissions": ["balances", "ownership", "transactions"]},
    }
    expect(element).to_have_attribute("aria-busy", "false")
    expect(widget_page.locator(BUTTON)).not_to_have_attribute("aria-disabled", "true")

    widget_page.evaluate("window.__events = []")
    widget_page.locator(BUTTON).click()
    link_test_bank(widget_page)
    success = outcome(widget_page)
    assert success["type"] == "finconn-connect-success"
    accounts = success["detail"]["accounts"]
    assert [a["display_name"] for a in accounts] == ["Test Checking", "Test Savings"]
    assert all(a["id"].startswith("fcacct_") for a in accounts)
    expect(widget_page.get_by_role("status")).to_have_text("2 accounts linked.")


def test_the_outcome_reaches_the_document_when_the_page_removed_the_element(
    widget_page: Page,
) -> None:
    # A page may redraw the part that holds the button while the modal is open (the example
    # app redraws its account list when a refresh finishes): the outcome must still be heard.
    widget_page.goto("/")
    widget_page.locator(BUTTON).click()
    expect(widget_page.locator(".dialog[data-step='consent']")).to_be_visible()
    widget_page.evaluate("document.querySelector('finconn-connect').remove()")
    expect(widget_page.locator("finconn-connect")).to_have_count(0)
    link_test_bank(widget_page)
    success = outcome(widget_page)
    assert success["type"] == "finconn-connect-success"
    assert [a["display_name"] for a in success["detail"]["accounts"]] == [
        "Test Checking",
        "Test Savings",
    ]


def test_start_event_can_be_cancelled(widget_page: Page) -> None:
    posts = session_posts(widget_page)
    widget_page.goto("/")
    widget_page.evaluate(
        "document.addEventListener('finconn-connect-start', (e) => e.preventDefault())"
    )
    # start() is what a click runs: it settles only once the flow is over, or at once when
    # cancelled, so awaiting it proves that nothing else was started.
    widget_page.evaluate("document.querySelector('finconn-connect').start()")
    assert [e["type"] for e in events(widget_page)] == ["finconn-connect-start"]
    assert posts == []
    expect(widget_page.locator("finconn-connect")).not_to_have_attribute("aria-busy", "true")
    expect(widget_page.locator("[data-finconn-sandbox]")).to_have_count(0)


def test_server_500_on_session_create_fires_an_error(widget_page: Page) -> None:
    def fail(route: Route) -> None:
        route.fulfill(status=500, content_type="text/html", body="<h1>Internal Server Error</h1>")

    widget_page.route("**/finconn/sessions", fail)
    widget_page.goto("/")
    widget_page.locator(BUTTON).click()
    assert outcome(widget_page) == {
        "type": "finconn-connect-error",
        "detail": {
            "error": {
                "code": "http_500",
                "message": "The server answered 500 Internal Server Error.",
            }
        },
    }
    status = widget_page.get_by_role("status")
    expect(status).to_be_visible()
    expect(status).to_have_text("The server answered 500 Internal Server Error.")
    expect(widget_page.locator("finconn-connect")).to_have_attribute("aria-busy", "false")


def test_stripe_outage_on_session_create_passes_the_servers_error_on(
    widget_page: Page, widget_app: Flask
) -> None:
    sandbox_of(widget_app).faults.api_error_rate = 1.0
    widget_page.goto("/")
    widget_page.locator(BUTTON).click()
    error = outcome(widget_page)["detail"]["error"]
    assert error["code"] == "stripe_unavailable"
    assert error["message"]
    expect(widget_page.get_by_role("status")).to_have_text(error["message"])


def test_network_failure_fires_an_error(widget_page: Page) -> None:
    widget_page.route("**/finconn/sessions", lambda route: route.abort("connectionrefused"))
    widget_page.goto("/")
    widget_page.locator(BUTTON).click()
    assert outcome(widget_page)["detail"]["error"]["code"] == "network_error"


def test_stripe_js_load_failure_is_reported_and_retried(widget_page: Page) -> None:
    attempts: list[str] = []

    def refuse(route: Route) -> None:
        attempts.append(route.request.url)
        route.abort("failed")

    widget_page.route("**/sandbox/stripe.js", refuse)
    widget_page.goto("/")
    widget_page.locator(BUTTON).click()
    error = outcome(widget_page)["detail"]["error"]
    assert error["code"] == "stripe_js_load_failed"
    assert "could not be loaded" in error["message"]
    assert len(attempts) == 2  # the load is retried once before giving up

    widget_page.unroute("**/sandbox/stripe.js")
    widget_page.evaluate("window.__events = []")
    widget_page.locator(BUTTON).click()
    close_modal(widget_page)
    assert outcome(widget_page)["type"] == "finconn-connect-exit"
    assert widget_page.locator("script[src$='/sandbox/stripe.js']").count() == 1


@pytest.mark.parametrize(
    ("spoil", "code"),
    [("expire_session", "session_expired"), ("complete_session", "session_used")],
)
def test_unusable_session_fires_stripes_error(
    widget_page: Page, widget_app: Flask, spoil: str, code: str
) -> None:
    def spoil_session(route: Route) -> None:
        response = route.fetch()
        getattr(sandbox_of(widget_app), spoil)(response.json()["id"])
        route.fulfill(response=response)

    widget_page.route("**/finconn/sessions", spoil_session)
    widget_page.goto("/")
    widget_page.locator(BUTTON).click()
    error = outcome(widget_page)["detail"]["error"]
    assert error["code"] == code
    expect(widget_page.get_by_role("status")).to_have_text(error["message"])


def test_double_click_opens_one_flow(widget_page: Page) -> None:
    posts = session_posts(widget_page)
    widget_page.goto("/")
    widget_page.locator(BUTTON).dblclick()
    widget_page.locator(BUTTON).click(force=True)
    close_modal(widget_page)
    outcome(widget_page)
    assert len(posts) == 1
    assert [e["type"] for e in events(widget_page)].count("finconn-connect-start") == 1


def test_element_added_later_on_a_page_that_includes_the_script_twice(widget_page: Page) -> None:
    widget_page.goto("/?twice=1&button=0")
    widget_page.wait_for_function("!!customElements.get('finconn-connect')")
    widget_page.evaluate(
        """() => {
          const el = document.createElement('finconn-connect');
          el.innerHTML = '<span class="label">Connect <em>a bank</em></span>';
          document.body.append(el);
        }"""
    )
    button = widget_page.get_by_role("button", name="Connect a bank")
    expect(button).to_have_attribute("type", "button")
    expect(button.locator("em")).to_have_text("a bank")
    button.click()
    close_modal(widget_page)
    assert outcome(widget_page)["type"] == "finconn-connect-exit"


def test_attributes_are_mirrored_as_properties(widget_page: Page) -> None:
    widget_page.goto("/")
    result = widget_page.evaluate(
        """() => {
          const el = document.querySelector('finconn-connect');
          const seen = {endpoint: el.endpoint, permissions: el.permissions};
          el.permissions = ['balances'];
          el.endpoint = '/elsewhere';
          el.disabled = true;
          return {
            seen,
            permissionsAttr: el.getAttribute('permissions'),
            endpointAttr: el.getAttribute('endpoint'),
            disabledAttr: el.hasAttribute('disabled'),
            buttonDisabled: el.querySelector('button').disabled,
            defined: customElements.get('finconn-connect') === FinConn.FinConnConnectElement,
          };
        }"""
    )
    assert result == {
        "seen": {"endpoint": "/finconn", "permissions": ["balances", "ownership", "transactions"]},
        "permissionsAttr": "balances",
        "endpointAttr": "/elsewhere",
        "disabledAttr": True,
        "buttonDisabled": True,
        "defined": True,
    }
    widget_page.evaluate("document.querySelector('finconn-connect').disabled = false")
    expect(widget_page.locator(BUTTON)).to_be_enabled()


def test_requests_carry_json_and_the_csrf_token(widget_page: Page) -> None:
    posts = session_posts(widget_page)
    widget_page.goto("/?csrf=t0ken")
    widget_page.locator(BUTTON).click()
    close_modal(widget_page)
    outcome(widget_page)
    headers = posts[0].headers
    assert headers["x-csrftoken"] == "t0ken"
    assert headers["content-type"] == "application/json"
    assert posts[0].post_data_json == {"permissions": ["balances", "ownership", "transactions"]}


def test_function_api_resolves_and_allows_one_flow_at_a_time(widget_page: Page) -> None:
    widget_page.goto("/?button=0")
    widget_page.wait_for_function("!!window.FinConn")
    widget_page.evaluate(
        "window.__first = FinConn.connect({permissions: 'balances'});"
        "window.__second = FinConn.connect().catch((e) => ({code: e.code, message: e.message}));"
    )
    assert widget_page.evaluate("window.__second") == {
        "code": "flow_in_progress",
        "message": "A bank-linking window is already open.",
    }
    close_modal(widget_page)
    result = widget_page.evaluate("window.__first")
    assert result["accounts"] == []
    assert result["cancelled"] is True
    assert result["session"].startswith("fcsess_")


def test_real_stripe_js_loads_once_and_reuses_the_pages_own_tag(widget_page: Page) -> None:
    loads: list[str] = []

    def stub(route: Route) -> None:
        loads.append(route.request.url)
        route.fulfill(content_type="text/javascript", body="window.Stripe = (pk) => ({pk});")

    widget_page.route("https://js.stripe.com/**", stub)
    widget_page.goto("/?button=0")
    widget_page.wait_for_function("!!window.FinConn")
    result = widget_page.evaluate(
        """async () => {
          const own = document.createElement('script');
          own.src = 'https://js.stripe.com/v3/';
          document.head.append(own);
          const url = 'https://js.stripe.com/endive/stripe.js';
          const [a, b] = await Promise.all([
            FinConn.loadStripe(url, false), FinConn.loadStripe(url, false)]);
          return {
            same: a === b && a === window.Stripe,
            tags: document.querySelectorAll('script[src^="https://js.stripe.com"]').length,
          };
        }"""
    )
    assert result == {"same": True, "tags": 1}
    assert loads == ["https://js.stripe.com/v3/"]


def test_stripe_js_load_failure_rejects_with_the_cause(widget_page: Page) -> None:
    widget_page.route("https://js.stripe.com/**", lambda route: route.abort("failed"))
    widget_page.goto("/?button=0")
    widget_page.wait_for_function("!!window.FinConn")
    error = widget_page.evaluate(
        """() => FinConn.loadStripe('https://js.stripe.com/v3/', false).catch((e) => ({
          name: e.name, code: e.code, message: e.message, cause: e.cause && e.cause.type,
          tags: document.querySelectorAll('script[src^="https://js.stripe.com"]').length,
        }))"""
    )
    assert error == {
        "name": "FinConnError",
        "code": "stripe_js_load_failed",
        "message": "Stripe.js could not be loaded from https://js.stripe.com/v3/.",
        "cause": "error",
        "tags": 0,
    }


def test_minifying_keeps_every_template_literal_intact(widget_app: Flask) -> None:
    client = widget_app.test_client()
    with widget_app.test_request_context("/"):
        helper = widget_app.jinja_env.globals["finconn"]
        urls = {name: helper.url(name) for name in ("finconn_js", "finconn_accounts_js")}  # type: ignore[attr-defined]
    for name, url in urls.items():
        with client.get(url) as response:
            minified = response.get_data(as_text=True)
        source_name = "finconn-connect.js" if name == "finconn_js" else "finconn-accounts.js"
        source = (STATIC / source_name).read_text()
        literals = re.findall(r"`[^`]*`", minified)
        assert literals, "expected template literals in the bundle"
        assert [lit for lit in literals if lit not in source] == []


def test_blocking_script_in_head_still_gets_the_label(widget_page: Page, widget_app: Flask) -> None:
    with widget_app.test_request_context("/"):
        js_url = widget_app.jinja_env.globals["finconn"].js_url  # type: ignore[attr-defined]
    html = (
        f'<!doctype html><html><head><script src="{js_url}"></script></head><body>'
        "<finconn-connect>Connect <b>now</b></finconn-connect></body></html>"
    )
    widget_page.route("**/plain", lambda route: route.fulfill(content_type="text/html", body=html))
    widget_page.goto("/plain")
    button = widget_page.get_by_role("button", name="Connect now")
    expect(button).to_be_visible()
    expect(widget_page.locator("finconn-connect button")).to_have_count(1)


def test_linking_works_under_the_hosts_csrf_protection(
    widget_page: Page, widget_app: Flask
) -> None:
    from flask_wtf.csrf import CSRFProtect, generate_csrf

    widget_app.config["SECRET_KEY"] = "test-secret"
    CSRFProtect(widget_app)
    widget_app.add_url_rule(
        "/csrf", "csrf_page", lambda: render_template_string(CSRF_PAGE, token=generate_csrf())
    )
    widget_page.goto("/csrf")
    widget_page.locator(BUTTON).click()
    link_test_bank(widget_page)
    assert outcome(widget_page)["type"] == "finconn-connect-success"


CSRF_PAGE = """<!doctype html><html><head><meta name="csrf-token" content="{{ token }}">
{{ finconn.scripts() }}</head><body>{{ finconn.button() }}</body></html>"""


@pytest.mark.parametrize(
    "widget_app", [{"FINCONN_URL_PREFIX": ""}, {"FINCONN_URL_PREFIX": "/bank"}], indirect=True
)
def test_linking_under_another_url_prefix(widget_page: Page, widget_app: Flask) -> None:
    prefix = widget_app.config["FINCONN_URL_PREFIX"]
    posts = session_posts(widget_page)
    widget_page.goto("/?accounts=1")
    expect(widget_page.locator("finconn-connect")).to_have_attribute("endpoint", prefix)
    widget_page.locator(BUTTON).click()
    link_test_bank(widget_page)
    assert outcome(widget_page)["type"] == "finconn-connect-success"
    assert posts[0].url.endswith(f"{prefix}/sessions")
    expect(widget_page.locator(".finconn-accounts__item")).to_have_count(2)
    stand_in = widget_page.locator("script[src*='stripe.js']").get_attribute("src")
    assert stand_in == f"{prefix}/sandbox/stripe.js"


def test_signed_out_visitor_gets_the_servers_sentence(widget_page: Page) -> None:
    widget_page.context.set_extra_http_headers({})
    widget_page.goto("/")
    widget_page.locator(BUTTON).click()
    assert outcome(widget_page)["detail"] == {
        "error": {
            "code": "not_authenticated",
            "message": "Sign in to link or view bank accounts.",
        }
    }
    expect(widget_page.get_by_role("status")).to_have_text("Sign in to link or view bank accounts.")


def test_stripe_outage_after_the_modal_closes_fires_an_error(
    widget_page: Page, widget_app: Flask
) -> None:
    widget_page.goto("/")
    widget_page.locator(BUTTON).click()
    widget_page.get_by_role("button", name="Agree and continue").click()
    widget_page.locator("[data-institution='test_oauth']").click()
    widget_page.get_by_role("button", name="Continue to Test (OAuth)").click()
    widget_page.get_by_role("button", name="Authorize").click()
    widget_page.get_by_role("button", name="Link accounts").click()
    sandbox_of(widget_app).faults.api_error_rate = 1.0  # Stripe goes down now
    widget_page.get_by_role("button", name="Done").click()
    error = outcome(widget_page)["detail"]["error"]
    assert error["code"] == "stripe_unavailable"
    expect(widget_page.locator("finconn-connect")).to_have_attribute("aria-busy", "false")


def test_a_stand_in_tag_the_page_already_has_is_reused(widget_page: Page) -> None:
    held: list[Route] = []
    widget_page.route("**/sandbox/stripe.js", lambda route: held.append(route))
    widget_page.goto("/")
    # The page's own tag is still loading when the widget wants Stripe.js: it must wait on it,
    # which it shows by listening for that tag's load event.
    widget_page.evaluate(
        """() => {
          const s = document.createElement('script');
          s.src = '/finconn/sandbox/stripe.js';
          s.addEventListener = function (type, ...rest) {
            if (type === 'load') window.__waitingOnOwnTag = true;
            return HTMLScriptElement.prototype.addEventListener.call(this, type, ...rest);
          };
          document.head.append(s);
          document.querySelector('finconn-connect button').click();
        }"""
    )
    widget_page.wait_for_function("window.__waitingOnOwnTag === true")
    for route in held:
        route.continue_()
    close_modal(widget_page)
    assert outcome(widget_page)["type"] == "finconn-connect-exit"
    assert len(held) == 1
    assert widget_page.locator("script[src$='/sandbox/stripe.js']").count() == 1


def test_a_stripe_js_load_that_times_out_is_retried_by_the_next_click(widget_page: Page) -> None:
    held: list[Route] = []

    def hang_the_first(route: Route) -> None:
        if held:
            route.continue_()
        else:
            held.append(route)  # never answered: the load hangs

    widget_page.route("**/sandbox/stripe.js", hang_the_first)
    widget_page.goto("/")
    widget_page.evaluate("FinConn.stripeTimeout = 500")
    widget_page.locator(BUTTON).click()
    error = outcome(widget_page)["detail"]["error"]
    assert error["code"] == "stripe_js_load_failed"
    assert "did not load" in error["message"]
    expect(widget_page.locator("script[src$='/sandbox/stripe.js']")).to_have_count(0)
    # The browser gives the hung request up in the end; until then it would hold back a second
    # request for the same URL.
    held[0].abort()

    widget_page.evaluate("window.__events = []")
    widget_page.locator(BUTTON).click()
    close_modal(widget_page)
    assert outcome(widget_page)["type"] == "finconn-connect-exit"
    assert len(held) == 1
    expect(widget_page.locator("script[src$='/sandbox/stripe.js']")).to_have_count(1)


STRIPE_FORMS = [
    "https://js.stripe.com/v3",
    "https://js.stripe.com/v3/",
    "https://js.stripe.com/v3/stripe.js",
    "https://js.stripe.com/basil/stripe.js",
]


@pytest.mark.parametrize(
    ("own", "wanted"), list(zip(STRIPE_FORMS, STRIPE_FORMS[1:] + STRIPE_FORMS[:1], strict=True))
)
def test_every_documented_stripe_js_url_reuses_the_pages_tag(
    widget_page: Page, own: str, wanted: str
) -> None:
    loads: list[str] = []

    def stub(route: Route) -> None:
        loads.append(route.request.url)
        route.fulfill(content_type="text/javascript", body="window.Stripe = (pk) => ({pk});")

    widget_page.route("https://js.stripe.com/**", stub)
    widget_page.goto("/?button=0")
    widget_page.wait_for_function("!!window.FinConn")
    tags = widget_page.evaluate(
        """async ([own, wanted]) => {
          const tag = document.createElement('script');
          tag.src = own;
          document.head.append(tag);
          await FinConn.loadStripe(wanted, false);
          return document.querySelectorAll('script[src^="https://js.stripe.com"]').length;
        }""",
        [own, wanted],
    )
    assert tags == 1
    assert loads == [own]


def test_load_stripe_rejects_a_missing_url_with_what_it_expected(widget_page: Page) -> None:
    widget_page.goto("/?button=0")
    widget_page.wait_for_function("!!window.FinConn")
    error = widget_page.evaluate(
        "FinConn.loadStripe(undefined, false).catch((e) => ({code: e.code, message: e.message}))"
    )
    assert error == {
        "code": "stripe_js_url_invalid",
        "message": 'loadStripe: expected the URL of Stripe.js, such as "https://js.stripe.com/v3/",'
        " got undefined.",
    }


def test_version_is_the_packages(widget_page: Page) -> None:
    widget_page.goto("/")
    assert widget_page.evaluate("FinConn.version") == importlib.metadata.version("flask-finconn")
    source = (STATIC / "finconn-connect.js").read_text()
    assert re.search(r"\d+\.\d+\.\d+", source) is None  # no version kept by hand


def test_private_state_is_not_api(widget_page: Page) -> None:
    widget_page.goto("/?accounts=1")
    expect(widget_page.locator(".finconn-accounts__empty")).to_be_visible()
    own = widget_page.evaluate(
        """() => ['finconn-connect', 'finconn-accounts'].map((tag) => {
          const el = document.querySelector(tag);
          const proto = Object.getPrototypeOf(el);
          return [...Object.keys(el), ...Object.getOwnPropertyNames(proto)].sort();
        })"""
    )
    assert own == [
        sorted(
            [
                "attributeChangedCallback",
                "busy",
                "button",
                "connect",
                "connectedCallback",
                "constructor",
                "disabled",
                "endpoint",
                "permissions",
                "purpose",
                "start",
            ]
        ),
        sorted(
            [
                "accounts",
                "authorize",
                "connectedCallback",
                "constructor",
                "disconnect",
                "disconnectedCallback",
                "endpoint",
                "features",
                "load",
                "mandateText",
                "refresh",
                "relink",
            ]
        ),
    ]
