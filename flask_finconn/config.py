"""Every ``FINCONN_*`` configuration key, with its default and meaning.

``FinConn.init_app`` reads each key once with ``app.config.setdefault`` and validates the
result into a :class:`Settings`; nothing else reads ``app.config``.
"""

from __future__ import annotations

FINCONN_STRIPE_SECRET_KEY: str | None = None
"""Real Stripe secret key (``sk_live_...``/``sk_test_...``). Default: env ``STRIPE_SECRET_KEY``.
Absent means the built-in sandbox is used."""

FINCONN_STRIPE_PUBLISHABLE_KEY: str | None = None
"""Publishable key handed to Stripe.js. Default: env ``STRIPE_PUBLISHABLE_KEY``."""

FINCONN_WEBHOOK_SECRET: str | list[str] | None = None
"""Webhook endpoint secret(s) (``whsec_...``). A list, or a comma-separated string, during
secret rotation. Default: env ``STRIPE_WEBHOOK_SECRET``. Required when not in sandbox mode."""

FINCONN_SANDBOX: bool | None = None
"""Use the offline emulator instead of Stripe. Default: True when no secret key is set and
the app is in debug or testing mode; otherwise set it (or a key) explicitly. Never with a
live key."""

FINCONN_SANDBOX_DATABASE: str | None = None
"""Where the emulator keeps its state: a file path, or ``":memory:"`` for tests.
Default: ``finconn-sandbox.sqlite3`` in the app's instance folder."""

FINCONN_SANDBOX_REFRESH_DELAY: float = 1.0
"""Seconds a sandbox refresh stays pending before it finishes on its own."""

FINCONN_PERMISSIONS: list[str] = ["balances", "transactions"]
"""What users are asked to share: any of ``balances``, ``ownership``, ``payment_method``,
``transactions``."""

FINCONN_PREFETCH: list[str] = []
"""Refreshes Stripe starts as soon as an account links: any of ``balances``, ``ownership``,
``transactions`` (each must also be in ``FINCONN_PERMISSIONS``)."""

FINCONN_COUNTRY: str = "US"
"""The session's ``filters[country]``."""

FINCONN_ACCOUNT_SUBCATEGORIES: list[str] | None = None
"""The session's ``filters[account_subcategories]``: ``checking``, ``savings``, ``mortgage``,
``line_of_credit``, ``credit_card``. None offers every kind."""

FINCONN_SUBSCRIBE_TRANSACTIONS: bool = True
"""Subscribe newly linked accounts to Stripe's daily transaction refresh (needs the
``transactions`` permission)."""

FINCONN_URL_PREFIX: str = "/finconn"
"""Where the blueprint is mounted."""

FINCONN_TASK_QUEUE: str = "inline"
"""Where webhook processing runs: ``inline`` (in the request) or ``celery``."""

FINCONN_STRIPE_RATE_LIMIT: float | None = None
"""Requests a second the app sends to Stripe at most, all its processes together when
``FINCONN_REDIS_URL`` is set (each process on its own otherwise); ``0`` turns
the limit off. Default: 20 with a Stripe key (Stripe allows 25 read requests a second in
test mode and 100 in live mode), none on the sandbox. A 429 from Stripe pauses every
process for its ``Retry-After`` and the request is sent again."""

FINCONN_REDIS_URL: str | None = None
"""Redis (``redis://host:6379/0``) shared by every process and worker of the app: the
Stripe request budget, and the locks and progress of ``flask finconn sync --all`` on
Celery. Needs the ``redis`` package (the ``celery`` extra installs it)."""

FINCONN_SYNC_LOCK_TTL: float = 60.0
"""Seconds an account's lock in a ``flask finconn sync --all`` run outlives the last page
its worker wrote: a worker killed mid-sync holds the account this long at most. Keep it
above the time one page of transactions takes (rate-limit waits included)."""

FINCONN_CELERY_VISIBILITY_TIMEOUT: float | None = None
"""Seconds before a Redis broker hands a task that a worker took but never acknowledged
(the worker was killed) to another worker. Unset (the default), Celery's setting is left
alone (an hour by Celery's default); a ``sync --all`` run that resumes queues a killed
worker's accounts again anyway. Set, ``init_celery`` sets Celery's
``broker_transport_options["visibility_timeout"]`` to it unless the host set one: 300 is a
good value for a quick recovery when no task of the Celery app runs longer or has an ETA or
countdown further off (those would be delivered twice). Must be above
``FINCONN_SYNC_LOCK_TTL``. Every Flask-FinConn task is safe to run twice."""

FINCONN_MAX_CONTENT_LENGTH: int = 64 * 1024
"""Largest request body the blueprint's JSON routes accept, in bytes."""

FINCONN_WEBHOOK_MAX_CONTENT_LENGTH: int = 1024 * 1024
"""Largest webhook body accepted, in bytes."""

FINCONN_WEBHOOK_TOLERANCE: int = 300
"""How old, in seconds, a webhook signature's timestamp may be."""

FINCONN_WEBHOOK_STORE_TIMEOUT: float = 10.0
"""Seconds a webhook delivery waits at most for the statements ahead of it to store its
event (deliveries arriving together in one process share one insert, sent one statement at
a time). Past it the delivery is answered 503 ``event_store_timeout`` and Stripe delivers it
again; a row stored meanwhile is then found stored, never processed twice. Keep it well
below the time Stripe waits for an answer and your server's request timeout."""

FINCONN_ALLOWED_ORIGINS: list[str] = []
"""Origins, besides the request's own host, allowed to call the state-changing routes."""

FINCONN_MERCHANT_NAME: str | None = None
"""Your business's name as users know it, shown where they consent to share bank data.
Required with real Stripe; in the sandbox the default is ``"Sandbox merchant"``."""

FINCONN_INSTALLATION_ID: str | None = None
"""Names this deployment at Stripe: it goes into every Customer's metadata
(``finconn_installation``) and every idempotency key, and only events about this
installation's customers are acted on. Default: a random id generated on first use and
stored in the ``finconn_installation`` table, so two deployments with their own databases
(dev, staging, production on one Stripe account) never share anything. Set it only to keep
the id across a database that is rebuilt from scratch; never give two databases one id."""

FINCONN_DELETE_DATA_ON_DISCONNECT: bool = False
"""When an account is disconnected (by the holder here, or at Stripe), delete its stored
transactions and owners at once; the account row and its balances stay. Default False keeps
them readable."""
