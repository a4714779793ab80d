"""The browser half of the sandbox's ACH payments: Stripe.js's bank account routes and the
hosted microdeposit verification page.

:func:`add_payment_routes` adds to the sandbox blueprint (see :mod:`.browser`):

- ``GET api/intent``: the intent a client secret belongs to, as Stripe.js sees it
- ``POST api/intent/collect``: a Financial Connections session for the bank modal
  (checking and savings accounts, the intent's permissions)
- ``POST api/intent/attach``: the account chosen in that session, or routing and account
  numbers typed in by hand, as the intent's PaymentMethod (``requires_confirmation``)
- ``POST api/intent/confirm``: confirm with online mandate acceptance from this browser
- ``POST api/intent/verify``: verify microdeposits (``amounts`` or ``descriptor_code``)
- ``GET|POST microdeposits/<token>``: the page ``hosted_verification_url`` points at
  (:func:`add_hosted_page`, which the standalone server serves too)

Like Stripe.js, the ``api/intent`` routes are authorised by the intent's client secret only;
the page by the token in its address.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, has_request_context, jsonify, request
from flask.blueprints import BlueprintSetupState
from markupsafe import Markup, escape

from ._params import ApiError
from .payments.testbank import AMOUNT_ATTEMPTS, DESCRIPTOR_ATTEMPTS

if TYPE_CHECKING:
    from .core import Sandbox

SUBCATEGORIES = ["checking", "savings"]
_CENTS = re.compile(r"^\d{1,2}$")


def _json() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "Send a JSON object with the intent's client_secret.")
    return data


def _secret(data: dict[str, Any] | None) -> str:
    value = data.get("client_secret") if data is not None else request.args.get("client_secret")
    if not isinstance(value, str) or not value:
        raise ApiError(
            400,
            "Missing required param: client_secret.",
            code="parameter_missing",
            param="client_secret",
        )
    return value


def _strings(value: Any, param: str) -> dict[str, str]:
    """A flat hash of strings from the page (billing details, typed bank details)."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ApiError(400, f"Invalid {param}: expected an object of strings.", param=param)
    return {k: v for k, v in value.items() if v}


def _online_acceptance() -> dict[str, Any]:
    """Mandate acceptance as Stripe.js infers it: online, from this browser."""
    return {
        "customer_acceptance": {
            "type": "online",
            "online": {
                "ip_address": request.remote_addr or "127.0.0.1",
                "user_agent": request.headers.get("User-Agent", "unknown"),
            },
        }
    }


def _expanded(sandbox: Sandbox, intent: dict[str, Any], expand: Any) -> dict[str, Any]:
    """The intent with ``payment_method`` expanded when the page asked for it."""
    if isinstance(expand, list) and "payment_method" in expand and intent.get("payment_method"):
        intent = dict(intent)
        intent["payment_method"] = sandbox.payments.payment_method(intent["payment_method"])
    return intent


def add_payment_routes(bp: Blueprint, sandbox: Sandbox) -> None:
    """Add Stripe.js's bank account routes and the hosted verification page to ``bp``."""
    payments = sandbox.payments
    add_hosted_page(bp, sandbox)

    def intent_of(secret: str) -> dict[str, Any]:
        return payments.intent_for_client_secret(secret)

    @bp.get("/api/intent")
    def intent() -> Response:
        expand = request.args.getlist("expand[]")
        return jsonify(_expanded(sandbox, intent_of(_secret(None)), expand))

    @bp.post("/api/intent/collect")
    def collect() -> Response:
        data = _json()
        found = intent_of(_secret(data))
        if found["status"] not in ("requires_payment_method", "requires_confirmation"):
            kind = found["object"]
            raise ApiError(
                400,
                f"You cannot collect a bank account for this {kind} because it has a status "
                f"of {found['status']}. Create a new {kind} to collect another account.",
                code=f"{kind}_unexpected_state",
            )
        customer = found.get("customer")
        if not customer:
            # Stripe links the account for the intent itself; the sandbox needs a holder.
            billing = _strings(data.get("billing_details"), "billing_details")
            params: dict[str, Any] = {k: billing[k] for k in ("name", "email") if k in billing}
            customer = sandbox.create_customer(params)["id"]
        ach = (found.get("payment_method_options") or {}).get("us_bank_account") or {}
        fc = ach.get("financial_connections") or {}
        permissions = list(dict.fromkeys(["payment_method", *(fc.get("permissions") or [])]))
        session = sandbox.create_session(
            {
                "account_holder": {"type": "customer", "customer": customer},
                "permissions": permissions,
                "prefetch": fc.get("prefetch") or [],
                "filters": {"account_subcategories": SUBCATEGORIES},
                "limits": {"accounts": 1},
            }
        )
        return jsonify({"client_secret": session["client_secret"], "id": session["id"]})

    @bp.post("/api/intent/attach")
    def attach() -> Response:
        data = _json()
        secret = _secret(data)
        billing = _strings(data.get("billing_details"), "billing_details")
        bank: dict[str, Any]
        if data.get("session") is not None:
            session_id, account = data.get("session"), data.get("account")
            if not isinstance(session_id, str) or not isinstance(account, str):
                raise ApiError(400, "Send the session id and the chosen account id.")
            session = sandbox.session(session_id)
            linked = [a["id"] for a in session["accounts"]["data"]]
            customer = intent_of(secret).get("customer")
            holder = session["account_holder"].get("customer")
            if account not in linked or (customer and holder != customer):
                raise ApiError(
                    400,
                    "This account was not linked in this session. Choose one of its accounts.",
                    param="account",
                )
            bank = {"financial_connections_account": account}
        else:
            bank = _strings(data.get("us_bank_account"), "us_bank_account")
        found = payments.collect(
            secret,
            {"type": "us_bank_account", "us_bank_account": bank, "billing_details": billing},
        )
        return jsonify(_expanded(sandbox, found, data.get("expand")))

    @bp.post("/api/intent/confirm")
    def confirm() -> Response:
        data = _json()
        secret = _secret(data)
        found = intent_of(secret)
        params: dict[str, Any] = {"client_secret": secret, "mandate_data": _online_acceptance()}
        method = data.get("payment_method")
        if isinstance(method, str):
            params["payment_method"] = method
        elif isinstance(method, dict):
            params["payment_method_data"] = {"type": "us_bank_account", **method}
        elif method is not None:
            raise ApiError(
                400, "Invalid payment_method: expected an id or an object.", param="payment_method"
            )
        if found["object"] == "setup_intent":
            return jsonify(payments.confirm_setup_intent(found["id"], params))
        return jsonify(payments.confirm_payment_intent(found["id"], params))

    @bp.post("/api/intent/verify")
    def verify() -> Response:
        data = _json()
        secret = _secret(data)
        found = intent_of(secret)
        params: dict[str, Any] = {"client_secret": secret}
        for key in ("amounts", "descriptor_code"):
            if data.get(key) is not None:
                params[key] = data[key]
        return jsonify(payments.verify_microdeposits(found["id"], params))


def add_hosted_page(bp: Blueprint, sandbox: Sandbox) -> None:
    """Add the hosted verification page (``microdeposits/<token>``) to ``bp``, and point the
    ``hosted_verification_url`` of intents confirmed in its app's requests at it (only
    those: elsewhere the configured base or the API's address is used)."""
    payments = sandbox.payments

    def point_links_here(setup: BlueprintSetupState) -> None:
        app, prefix = setup.app, setup.url_prefix or ""

        def locate() -> str | None:
            # The URL is made inside an API call; when a request of this app made that call
            # (its views through the SDK's in-process transport, the Stripe.js stand-in,
            # or the standalone server's API), the page is here, at the address that
            # request came to. Nothing is remembered between requests: the address comes
            # from the caller's Host header, so carrying it to a call made outside that
            # request (or in another app's request) would let one caller choose the link
            # another holder is sent.
            if not has_request_context():
                return None
            if current_app._get_current_object() is not app:  # type: ignore[attr-defined]
                return None
            return f"{request.url_root.rstrip('/')}{prefix}/microdeposits"

        payments.page_locators.append(locate)

    bp.record_once(point_links_here)

    @bp.route("/microdeposits/<token>", methods=["GET", "POST"])
    def hosted_verification(token: str) -> tuple[str, int]:
        try:
            found = payments.intent_for_verification(token)
        except ApiError:
            return _page("This link is not valid", _p("Check the address in your email."), 404)
        kind = found["object"]
        action = (found.get("next_action") or {}).get("verify_with_microdeposits") or {}
        use = request.values.get("with") or action.get("microdeposit_type") or "descriptor_code"
        use = "amounts" if use == "amounts" else "descriptor_code"
        error: ApiError | None = None
        field_errors: dict[str, str] = {}
        if request.method == "POST" and found["status"] == "requires_action":
            params, field_errors = _typed_values(use)
            if not field_errors:
                try:
                    found = payments.verify_microdeposits(found["id"], params)
                except ApiError as exc:
                    error = exc
                    found = payments.intent_for_verification(token)
        if found["status"] != "requires_action":
            return _outcome(found, kind, error)
        left = _attempts_left(sandbox, found, use)
        pm = payments.payment_method(found["payment_method"])["us_bank_account"]
        bank = f"the {pm.get('bank_name') or 'bank'} account ending in {pm.get('last4')}"
        return _form(found, bank, use, left, error, field_errors)


def _typed_values(use: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The values typed on the page, or what is wrong with them (no attempt is spent)."""
    if use == "amounts":
        raw = [request.form.get(f"amount{i}", "").strip() for i in (1, 2)]
        errors = {
            f"amount{i}": "Enter the amount in cents: 1 to 99."
            for i, value in enumerate(raw, 1)
            if not _CENTS.match(value) or int(value) == 0
        }
        return ({"amounts": [int(v) for v in raw]} if not errors else {}), errors
    code = request.form.get("descriptor_code", "").strip().upper()
    if not re.match(r"^SM[A-Z0-9]{4}$", code):
        return {}, {"descriptor_code": "Enter the 6-character code that starts with SM."}
    return {"descriptor_code": code}, {}


def _attempts_left(sandbox: Sandbox, intent: dict[str, Any], use: str) -> int:
    """How many more times the holder may try ``use`` (amounts or a descriptor code)."""
    payments = sandbox.payments
    kind = "seti" if intent["object"] == "setup_intent" else "pi"
    with payments.host.store.tx(write=False):
        _, internal = payments.objects.load(kind, intent["id"])
    used = (internal.get("attempts") or {}).get(use, 0)
    limit = AMOUNT_ATTEMPTS if use == "amounts" else DESCRIPTOR_ATTEMPTS
    return max(limit - int(used), 0)


def _p(text: str, cls: str = "lede") -> Markup:
    return Markup('<p class="{}">{}</p>').format(cls, text)


def _field(
    name: str, label: str, errors: dict[str, str], rejected: bool = False, **attrs: str
) -> Markup:
    """One input with its label; ``rejected``: the sandbox refused the values typed (the
    page's alert then describes the field, which takes the focus, so that it is read out)."""
    error = errors.get(name)
    extra = Markup("").join(Markup(' {}="{}"').format(k, v) for k, v in attrs.items())
    described = "page-error hint" if rejected else "hint"
    if error:
        described += f" {name}-error"
        extra += Markup(' aria-invalid="true"')
    if rejected or (error and next(iter(errors)) == name):
        extra += Markup(" autofocus")
    return Markup(
        '<div class="field"><label for="{n}">{label}</label>'
        '<input id="{n}" name="{n}" aria-describedby="{d}" autocomplete="off"{extra}>'
        "{err}</div>"
    ).format(
        n=name,
        label=label,
        d=described,
        extra=extra,
        err=Markup('<p class="field-error" id="{}-error">{}</p>').format(name, error)
        if error
        else "",
    )


def _form(
    intent: dict[str, Any],
    bank: str,
    use: str,
    left: int,
    error: ApiError | None,
    field_errors: dict[str, str],
) -> tuple[str, int]:
    what = " and complete your payment" if intent["object"] == "payment_intent" else " and save it"
    alert = ""
    if error is not None or field_errors:
        many = len(field_errors) > 1
        message = (
            error.message
            if error is not None
            else f"Check the highlighted field{'s' if many else ''}."
        )
        alert = Markup('<p class="error" role="alert" id="page-error">{}</p>').format(message)
    if use == "amounts":
        hint = "Two deposits of less than $1.00 each, described as ACCTVERIFY."
        fields = Markup("").join(
            _field(
                f"amount{i}",
                f"{nth} amount (cents)",
                field_errors,
                error is not None and i == 1,
                inputmode="numeric",
                maxlength="2",
                value=request.form.get(f"amount{i}", ""),
            )
            for i, nth in ((1, "First"), (2, "Second"))
        )
        switch = Markup('<a href="?with=descriptor_code">I have a code starting with SM</a>')
    else:
        hint = "A $0.01 deposit whose description starts with SM, followed by 4 characters."
        fields = _field(
            "descriptor_code",
            "Code from the deposit description",
            field_errors,
            error is not None,
            maxlength="6",
            placeholder="SM0000",
            value=request.form.get("descriptor_code", ""),
        )
        switch = Markup('<a href="?with=amounts">I received two deposits instead</a>')
    body = Markup(
        '{alert}<p class="lede">Enter what you see on your bank statement to verify {bank}'
        "{what}.</p>"
        '<p class="fine" id="hint">{hint} Deposits arrive in 1 to 2 business days.</p>'
        '<form method="post" class="form" novalidate>'
        '<input type="hidden" name="with" value="{use}">{fields}'
        '<p class="attempts" id="attempts">{left}</p>'
        '<button type="submit" class="primary">Verify</button></form>'
        '<p class="fine">{switch}</p>'
        '<p class="fine">Sandbox: <code>SM11AA</code> or <code>32</code> and <code>45</code> '
        "verify; <code>SM33CC</code> or <code>10</code> and <code>11</code> use up the "
        "attempts.</p>"
    ).format(
        alert=alert,
        bank=bank,
        what=what,
        hint=hint,
        use=use,
        fields=fields,
        left=f"{left} verification attempt{'s' if left != 1 else ''} left.",
        switch=switch,
    )
    return _page("Verify your bank account", body, 400 if alert else 200)


def _outcome(intent: dict[str, Any], kind: str, error: ApiError | None) -> tuple[str, int]:
    status = intent["status"]
    if status in ("succeeded", "processing"):
        body = Markup(
            '<div class="hero" aria-hidden="true"><span class="check">✓</span></div>{}'
        ).format(
            _p(
                "Your bank account is verified. The payment is on its way."
                if kind == "payment_intent"
                else "Your bank account is verified and saved. You can close this page."
            )
        )
        return _page("Bank account verified", body, 200)
    reason = (
        error.message
        if error is not None
        else "This bank account can no longer be verified with this link."
    )
    body = Markup('<p class="error" role="alert">{}</p>{}').format(
        reason, _p("Go back to the site and add your bank account again.")
    )
    return _page("Verification unavailable", body, 400 if error is not None else 200)


def _page(title: str, body: Markup | str, status: int) -> tuple[str, int]:
    html = Markup(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>{title} · Sandbox</title>"
        '<link rel="stylesheet" href="../static/finconn-verify.css"></head>'
        '<body><main class="card" aria-labelledby="title">'
        '<div class="top"><span class="merchant">Stripe · bank verification</span>'
        '<span class="badge">Sandbox</span></div>'
        '<div class="content"><h1 id="title" class="title">{title}</h1>{body}</div>'
        "</main></body></html>"
    ).format(title=title, body=body if isinstance(body, Markup) else escape(body))
    return str(html), status
