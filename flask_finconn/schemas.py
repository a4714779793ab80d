"""Marshmallow schemas: the JSON wire contract of the blueprint's routes.

Input schemas refuse unknown fields, so a typo is a 400 with ``fields`` rather than a
silently ignored option. Output schemas turn models into the routes' JSON: amounts stay
integers in minor units, times are ISO 8601 UTC strings (``2026-11-25T09:40:00Z``). The
account list is also rendered in SQL (``services/listing.py``); a test holds the two equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from marshmallow import RAISE, Schema, fields, validate, validates_schema
from marshmallow import ValidationError as SchemaError

from .errors import ValidationError
from .models import iso, iso_unix
from .services.payment_method_sync import blocked_message
from .state import PERMISSIONS, REFRESH_FEATURES

TRANSACTION_STATUSES = ("pending", "posted", "void")


class UTCTime(fields.Field[datetime]):
    """A datetime dumped as an ISO 8601 UTC string with a ``Z``."""

    def _serialize(self, value: datetime | None, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return iso(value)


class UTCDateTimeParam(fields.AwareDateTime):
    """An ISO 8601 date or time (UTC unless it says), loaded as an aware UTC datetime.

    A time whose offset moves it outside the calendar (``0001-01-01T00:00:00+05:00``) is a
    field error, not an overflow.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(default_timezone=UTC, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        parsed = super()._deserialize(value, attr, data, **kwargs)
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            raise SchemaError("Not a time between 0001-01-01 and 9999-12-31 in UTC.") from None


def load(schema: Schema, data: Any) -> dict[str, Any]:
    """Validate request data with ``schema``; a failure is a 400 listing each field's problem."""
    if not isinstance(data, Mapping):
        raise ValidationError("The request body must be a JSON object.")
    try:
        result: dict[str, Any] = schema.load(data)
    except SchemaError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        raise ValidationError(
            "Some fields of the request are not valid.", fields=dict(messages)
        ) from None
    return result


class _Input(Schema):
    class Meta:
        unknown = RAISE


# inputs


class SessionCreateSchema(_Input):
    """``POST /sessions``: optionally narrow the permissions asked for."""

    permissions = fields.List(
        fields.String(validate=validate.OneOf(PERMISSIONS)),
        validate=validate.Length(min=1),
    )


class SessionCompleteSchema(_Input):
    """``POST /sessions/<id>/complete``: no fields; account ids are never taken from the browser."""


class RefreshSchema(_Input):
    """``POST /accounts/<id>/refresh``: which data to fetch again."""

    features = fields.List(
        fields.String(validate=validate.OneOf(REFRESH_FEATURES)),
        required=True,
        validate=validate.Length(min=1),
    )


class DisconnectSchema(_Input):
    """``POST /accounts/<id>/disconnect``: no fields."""


class TransactionQuerySchema(_Input):
    """``GET /accounts/<id>/transactions`` query string."""

    limit = fields.Integer(load_default=25, validate=validate.Range(min=1, max=100))
    cursor = fields.String(load_default=None)
    status = fields.String(load_default=None, validate=validate.OneOf(TRANSACTION_STATUSES))
    # transacted_at window: ISO 8601 dates or times (UTC unless they say); until is exclusive.
    since = UTCDateTimeParam(load_default=None)
    until = UTCDateTimeParam(load_default=None)


class SetupIntentCreateSchema(_Input):
    """``POST /setup-intents``: no fields."""


class SetupIntentCompleteSchema(_Input):
    """``POST /setup-intents/<id>/complete``: no fields; what was saved is read from Stripe."""


class _MandateAcceptanceSchema(_Input):
    accepted = fields.Boolean(
        required=True,
        validate=validate.Equal(True, error="The holder must accept the mandate text."),
    )


class AccountPaymentMethodSchema(_Input):
    """``POST /accounts/<id>/payment-method``: the holder accepted the mandate text."""

    mandate = fields.Nested(_MandateAcceptanceSchema, required=True)


class VerifySchema(_Input):
    """``POST /payment-methods/<id>/verify``: the two deposit amounts or the descriptor code."""

    amounts = fields.List(
        fields.Integer(strict=True, validate=validate.Range(min=1, max=99)),
        validate=validate.Length(equal=2, error="Send exactly two amounts, in cents."),
    )
    descriptor_code = fields.String(
        validate=validate.Regexp(
            r"^SM[A-Za-z0-9]{4}$", error="A descriptor code is SM and 4 letters or digits."
        )
    )

    @validates_schema
    def _one_of(self, data: dict[str, Any], **kwargs: Any) -> None:
        if ("amounts" in data) == ("descriptor_code" in data):
            raise SchemaError("Send either amounts or descriptor_code.", "_schema")


class DetachSchema(_Input):
    """``POST /payment-methods/<id>/detach``: no fields."""


# outputs


def _balance(account: Any) -> dict[str, Any] | None:
    snapshot = account.latest_balance
    if snapshot is None:
        return None
    return {
        "current": snapshot.current,
        # Stripe: when a bank gives no available balance, current is the figure to use.
        "available": snapshot.current if snapshot.available is None else snapshot.available,
        "currency": snapshot.currency,
        "as_of": iso(snapshot.as_of),
    }


def _refresh_state(raw: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    return {
        "status": raw.get("status"),
        "last_attempted_at": iso_unix(raw.get("last_attempted_at")),
        "next_refresh_available_at": iso_unix(raw.get("next_refresh_available_at")),
    }


def _refresh(account: Any) -> dict[str, Any]:
    return {
        "balance": _refresh_state(account.balance_refresh),
        "ownership": _refresh_state(account.ownership_refresh),
        "transactions": _refresh_state(account.transaction_refresh),
    }


class SessionSchema(Schema):
    """A new linking session, with what the browser needs to open the modal."""

    id = fields.String()
    client_secret = fields.String()
    publishable_key = fields.String(allow_none=True)
    stripe_js_url = fields.String()
    sandbox = fields.Boolean()


class AccountSchema(Schema):
    """A linked account with its latest balance and refresh states."""

    id = fields.String()
    institution_name = fields.String()
    display_name = fields.String(allow_none=True)
    last4 = fields.String(allow_none=True)
    category = fields.String()
    subcategory = fields.String()
    status = fields.String()
    action = fields.String()
    permissions = fields.List(fields.String())
    subscriptions = fields.List(fields.String())
    balance = fields.Function(_balance)
    refresh = fields.Function(_refresh)
    linked_at = UTCTime()
    updated_at = UTCTime()


class CompletedSessionSchema(Schema):
    """``POST /sessions/<id>/complete``: the accounts linked, or ``cancelled``."""

    accounts = fields.List(fields.Nested(AccountSchema))
    cancelled = fields.Boolean()


class TransactionSchema(Schema):
    """One transaction; ``account`` is our account id."""

    id = fields.String()
    account = fields.String(attribute="account_id")
    amount = fields.Integer()
    currency = fields.String()
    description = fields.String()
    status = fields.String()
    transacted_at = UTCTime()
    posted_at = UTCTime()
    void_at = UTCTime()


class TransactionPageSchema(Schema):
    """A page of transactions, newest first, with the cursor of the next page."""

    data = fields.List(fields.Nested(TransactionSchema))
    has_more = fields.Boolean()
    next_cursor = fields.String(allow_none=True)


class OwnerSchema(Schema):
    """One owner of an account, from the latest ownership refresh."""

    id = fields.String()
    name = fields.String()
    email = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)
    address = fields.String(attribute="raw_address", allow_none=True)
    refreshed_at = UTCTime()


class OwnerListSchema(Schema):
    """``GET /accounts/<id>/owners``."""

    data = fields.List(fields.Nested(OwnerSchema))


class SetupIntentSchema(Schema):
    """A SetupIntent the browser collects a bank account into, and the mandate to show."""

    id = fields.String()
    client_secret = fields.String()
    publishable_key = fields.String(allow_none=True)
    stripe_js_url = fields.String()
    sandbox = fields.Boolean()
    mandate_text = fields.String()
    billing_details = fields.Dict(keys=fields.String(), values=fields.String(allow_none=True))


class MandateTextSchema(Schema):
    """``GET /mandate``: the authorization to show before "Use for payments" saves an account."""

    mandate_text = fields.String()


def _verification(method: Any) -> dict[str, Any] | None:
    if method.verification_type is None and method.status != "requires_verification":
        return None
    return {
        "type": method.verification_type,
        "arrival_date": iso(method.verification_arrival_date),
        "attempts_remaining": method.verification_attempts_remaining,
    }


def _mandate(method: Any) -> dict[str, Any]:
    return {"status": method.mandate_status, "accepted_at": iso(method.mandate_accepted_at)}


def _blocked(method: Any) -> dict[str, Any] | None:
    if not method.blocked:
        return None
    return {
        "reason": method.blocked.get("reason"),
        "network_code": method.blocked.get("network_code"),
        "message": blocked_message(method.blocked),
    }


class PaymentMethodSchema(Schema):
    """A saved bank account for debits; ``account`` is our account id (null: typed by hand)."""

    id = fields.String()
    account = fields.String(attribute="account_id", allow_none=True)
    bank_name = fields.String(allow_none=True)
    last4 = fields.String(allow_none=True)
    account_type = fields.String(allow_none=True)
    status = fields.String()
    verification = fields.Function(_verification)
    mandate = fields.Function(_mandate)
    blocked = fields.Function(_blocked)
    created_at = UTCTime()


class PaymentMethodListSchema(Schema):
    """``GET /payment-methods``."""

    data = fields.List(fields.Nested(PaymentMethodSchema))


class CompletedSetupSchema(Schema):
    """``POST /setup-intents/<id>/complete``: the payment method saved, or ``cancelled``."""

    payment_method = fields.Nested(PaymentMethodSchema, allow_none=True)
    accounts = fields.List(fields.Nested(AccountSchema))
    cancelled = fields.Boolean()


def _failure(payment: Any) -> dict[str, Any] | None:
    if payment.failure_code is None:
        return None
    return {"code": payment.failure_code, "message": payment.failure_message}


class PaymentSchema(Schema):
    """One debit; ``payment_method`` is our payment method id."""

    id = fields.String()
    payment_method = fields.String(attribute="payment_method_id")
    amount = fields.Integer()
    currency = fields.String()
    description = fields.String()
    status = fields.String()
    failure = fields.Function(_failure)
    created_at = UTCTime()
    updated_at = UTCTime()


class PaymentListSchema(Schema):
    """``GET /payments``, newest first."""

    data = fields.List(fields.Nested(PaymentSchema))
