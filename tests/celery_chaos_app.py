"""The Celery worker of ``test_celery_chaos.py``: a process of its own, so it can be killed.

``celery -A celery_chaos_app:celery worker`` builds the host app on
``FINCONN_CHAOS_DATABASE`` with ``FINCONN_TASK_QUEUE = "celery"``, wired by ``init_celery``
to the Redis broker ``FINCONN_TEST_REDIS_URL`` and the queue ``FINCONN_CHAOS_QUEUE``. Events
of :data:`EFFECT_TYPE` get a handler that inserts one :data:`EFFECTS` row per run in the
handler's transaction, then takes :data:`HANDLER_SECONDS`: a kill lands mid-handler, and the
rows tell how often each event was processed.
"""

from __future__ import annotations

import os
import time
from typing import Any

import sqlalchemy as sa

EFFECT_TYPE = "test.chaos_effect"
HANDLER_SECONDS = 0.05
EFFECTS = sa.Table(
    "chaos_effect",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("event_id", sa.String(255), nullable=False),
)


def make_celery(queue: str) -> Any:
    """A Celery app on the test Redis whose tasks go to ``queue``."""
    from celery import Celery

    celery = Celery("finconn_chaos", broker=os.environ["FINCONN_TEST_REDIS_URL"])
    celery.conf.update(
        task_default_queue=queue,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return celery


def record_effect(state: Any, event: Any) -> None:
    state.db.session.execute(sa.insert(EFFECTS).values(event_id=event.id))
    time.sleep(HANDLER_SECONDS)


def __getattr__(name: str) -> Any:
    """``celery``: the worker's Celery app, wired to the host app (built on first use)."""
    if name != "celery":
        raise AttributeError(name)
    from flask_finconn.services import handlers
    from flask_finconn.tasks import init_celery
    from flask_finconn.testing import create_app

    app = create_app(os.environ["FINCONN_CHAOS_DATABASE"], FINCONN_TASK_QUEUE="celery")
    handlers.HANDLERS[EFFECT_TYPE] = record_effect  # this worker process only
    celery = make_celery(os.environ["FINCONN_CHAOS_QUEUE"])
    init_celery(celery, app)
    globals()["celery"] = celery
    return celery
