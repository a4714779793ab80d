"""Every route the sandbox serves: (method, path pattern, handler), first match wins.

A new resource family adds its handler module's routes here.
"""

from __future__ import annotations

from . import _http_customers as customers
from . import _http_events as events
from . import _http_fc as fc
from . import _http_helpers as helpers
from ._http_fc import FC
from ._http_helpers import HELPERS
from ._wire import Handler
from .payments.routes import ROUTES as PAYMENT_ROUTES

_ID = r"([A-Za-z0-9_]+)"
ROUTES: list[tuple[str, str, Handler]] = [
    ("POST", "/v1/customers", customers.create_customer),
    ("GET", "/v1/customers", customers.list_customers),
    ("GET", f"/v1/customers/{_ID}", customers.retrieve_customer),
    ("POST", f"/v1/customers/{_ID}", customers.update_customer),
    ("DELETE", f"/v1/customers/{_ID}", customers.delete_customer),
    ("POST", f"{FC}/sessions", fc.create_session),
    ("GET", f"{FC}/sessions/{_ID}", fc.retrieve_session),
    ("GET", f"{FC}/accounts", fc.list_accounts),
    ("GET", f"{FC}/accounts/{_ID}", fc.retrieve_account),
    ("POST", f"{FC}/accounts/{_ID}/refresh", fc.refresh_account),
    ("POST", f"{FC}/accounts/{_ID}/subscribe", fc.subscribe),
    ("POST", f"{FC}/accounts/{_ID}/unsubscribe", fc.unsubscribe),
    ("POST", f"{FC}/accounts/{_ID}/disconnect", fc.disconnect_account),
    ("GET", f"{FC}/accounts/{_ID}/owners", fc.list_owners),
    ("GET", f"{FC}/transactions", fc.list_transactions),
    ("GET", f"{FC}/transactions/{_ID}", fc.retrieve_transaction),
    ("GET", "/v1/events", events.list_events),
    ("GET", f"/v1/events/{_ID}", events.retrieve_event),
    ("POST", f"{HELPERS}/sessions/{_ID}/complete", helpers.complete_session),
    ("POST", f"{HELPERS}/sessions/{_ID}/cancel", helpers.cancel_session),
    ("POST", f"{HELPERS}/sessions/{_ID}/expire", helpers.expire_session),
    ("POST", f"{HELPERS}/finish_refreshes", helpers.finish_refreshes),
    ("POST", f"{HELPERS}/accounts/{_ID}/deactivate", helpers.deactivate),
    ("POST", f"{HELPERS}/accounts/{_ID}/reactivate", helpers.reactivate),
    ("POST", f"{HELPERS}/accounts/{_ID}/disconnect", helpers.disconnect),
    ("POST", f"{HELPERS}/accounts/{_ID}/fire_event", helpers.fire_event),
    ("POST", f"{HELPERS}/accounts/{_ID}/history", helpers.set_history),
    ("POST", f"{HELPERS}/advance_time", helpers.advance_time),
    ("POST", f"{HELPERS}/deliver_events", helpers.deliver_events),
    ("GET", f"{HELPERS}/institutions", helpers.list_institutions),
]
ROUTES.extend(PAYMENT_ROUTES)  # SetupIntents, PaymentIntents, PaymentMethods, ...
