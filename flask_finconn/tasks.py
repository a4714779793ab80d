"""Where webhook events are processed: ``FINCONN_TASK_QUEUE`` (``inline`` or ``celery``).

A queue only has to carry event ids to a worker that calls
:func:`flask_finconn.services.events.process_event` in an app context; the claim there
makes sure one event is processed once however often its id is queued, and the sweep
queues again whatever a queue lost. ``init_app`` builds the queue ``FINCONN_TASK_QUEUE``
names (a closed list: ``inline`` or ``celery``) and keeps it at ``state.queue``; the event
ledger only ever uses it through :class:`~flask_finconn.state.TaskQueue`.

Celery, with the app factory pattern of Flask's Celery guide::

    from celery import Celery
    from flask_finconn.tasks import init_celery

    celery = Celery(__name__, broker="redis://localhost:6379/0")
    app = create_app()                     # FINCONN_TASK_QUEUE = "celery"
    init_celery(celery, app)

``init_celery`` registers the tasks ``flask_finconn.process_events`` and
``flask_finconn.sweep_events`` on the host's Celery app, and schedules the sweep on Celery
beat every :data:`SWEEP_INTERVAL` seconds. Run ``celery -A yourmodule worker -B`` (or a
separate ``beat``). It also registers the fleet sync: ``flask_finconn.sync_fleet`` (put
it on beat, or run ``flask finconn sync --all`` from cron) queues one
``flask_finconn.sync_account`` task per account (:mod:`~flask_finconn.services.fleet`).

The web side never waits for the broker: a request hands the stored event's id to a
publisher thread of its process and answers. The thread publishes whatever has gathered
since its last message as one task: a quiet site still sends each id within
:data:`LINGER`, and a busy one sends at most one message per :data:`INTERVAL`, carrying
many ids. An id lost on the way (broker down, the process killed) belongs to an event
stored as ``pending``, which the sweep queues again.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app

from .errors import ConfigurationError
from .models import WebhookEvent
from .services import events, fleet, installation
from .services import sync as sync_service
from .state import FinConnState, TaskQueue, get_state

if TYPE_CHECKING:
    from celery import Celery

__all__ = [
    "FLEET_TASK",
    "INTERVAL",
    "MAX_BATCH",
    "PROCESS_TASK",
    "SWEEP_INTERVAL",
    "SWEEP_TASK",
    "SYNC_TASK",
    "CeleryQueue",
    "InlineQueue",
    "init_celery",
    "make_queue",
    "start_fleet_sync",
]

logger = logging.getLogger("flask_finconn.tasks")

PROCESS_TASK = "flask_finconn.process_events"
SWEEP_TASK = "flask_finconn.sweep_events"
SYNC_TASK = "flask_finconn.sync_account"
FLEET_TASK = "flask_finconn.sync_fleet"
SWEEP_INTERVAL = 60.0
MAX_BATCH = 100  # ids per message: bounds how much one worker takes at once
# How long the publisher lets ids gather after the first one: on a quiet site an event
# waits this much longer, unnoticed.
LINGER = 0.05
# Under load it publishes at most once per this long, so one message carries what many
# requests queued: a message costs the web process about as much CPU as a delivery does.
INTERVAL = 0.2
PUBLISHER_KEY = "finconn.publisher"


class InlineQueue:
    """Processes events right away, in the calling request or command."""

    claims_on_receipt = True

    def received(
        self, state: FinConnState, event_id: str, *, new: bool, stored: WebhookEvent | None
    ) -> str | None:
        """Process the event now: a new one, or a retry of one still waiting or failed."""
        if stored is not None:
            return events.run_claimed(state, stored)
        return events.process_event(state, event_id)

    def enqueue(self, app: Flask, event_ids: Sequence[str]) -> None:
        with app.app_context():
            state = get_state(app)
            for event_id in event_ids:
                events.process_event(state, event_id)


class CeleryQueue:
    """Hands ids to the app's publisher, which sends them as ``process_events`` tasks."""

    claims_on_receipt = False

    def received(
        self, state: FinConnState, event_id: str, *, new: bool, stored: WebhookEvent | None
    ) -> str | None:
        """Queue a new event; a duplicate delivery is left to the sweep (None either way)."""
        if new:
            try:
                self.enqueue(current_app._get_current_object(), [event_id])  # type: ignore[attr-defined]
            except ConfigurationError:
                raise
            except Exception:
                # The event is stored and acknowledged; the sweep queues it once the broker
                # is back.
                logger.exception(
                    "Could not queue event %s; the sweep will queue it again.", event_id
                )
        return None

    def enqueue(self, app: Flask, event_ids: Sequence[str]) -> None:
        publisher: _Publisher | None = app.extensions.get(PUBLISHER_KEY)
        if publisher is None:
            raise ConfigurationError(
                "FINCONN_TASK_QUEUE is 'celery' but Celery is not set up for this app; call "
                "flask_finconn.tasks.init_celery(celery, app) where you create the app."
            )
        publisher.put(event_ids)


def make_queue(name: str) -> TaskQueue:
    """The queue ``FINCONN_TASK_QUEUE`` names (one of ``state.TASK_QUEUES``)."""
    queues: dict[str, type[InlineQueue | CeleryQueue]] = {
        "inline": InlineQueue,
        "celery": CeleryQueue,
    }
    return queues[name]()


class _Publisher:
    """Sends queued ids to Celery from a thread of this process, many ids per message."""

    def __init__(self, celery: Celery) -> None:
        self.celery = celery
        self._ids: list[str] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pid: int | None = None
        # A forked child starts empty, with a lock nobody holds: what was waiting is its
        # parent's to publish.
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._ids = []
        self._lock = threading.Lock()
        self._pid = None

    def put(self, event_ids: Sequence[str]) -> None:
        with self._lock:
            self._ids.extend(event_ids)
            # Threads do not survive a fork (gunicorn --preload): one thread per process.
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._wake = threading.Event()
                threading.Thread(target=self._run, name="finconn-publisher", daemon=True).start()
                atexit.register(self.flush)
        self._wake.set()

    def _run(self) -> None:
        wake = self._wake
        last = -INTERVAL  # when the last message went
        while True:
            wake.wait()
            time.sleep(max(LINGER, last + INTERVAL - time.monotonic()))
            wake.clear()
            last = time.monotonic()
            self.flush()

    def flush(self) -> None:
        """Publish every id waiting now (also called at interpreter exit)."""
        with self._lock:
            waiting, self._ids = self._ids, []
        for start in range(0, len(waiting), MAX_BATCH):
            batch = waiting[start : start + MAX_BATCH]
            try:
                self.celery.send_task(PROCESS_TASK, args=[batch])
            except Exception:
                # The events are stored as pending: the sweep queues them again.
                logger.exception("Could not queue %d event(s); the sweep will.", len(batch))


def start_fleet_sync(app: Flask) -> fleet.Start:
    """Queue one sync task per account not disconnected, or resume the unfinished run.

    Returns what was started or resumed (:func:`.services.fleet.start_or_resume`): a
    resumed run queues again only its accounts without an outcome, and only once it has
    made no progress for ``FINCONN_SYNC_LOCK_TTL`` (before that it is still running and
    nothing is queued, so a scheduled ``sync_fleet`` never piles up tasks). Needs ``init_celery``
    and ``FINCONN_REDIS_URL``. Call in an app context.
    """
    celery = app.extensions.get("celery")
    if celery is None or SYNC_TASK not in celery.tasks:
        raise ConfigurationError(
            "A fleet sync runs on Celery; call flask_finconn.tasks.init_celery(celery, app) "
            "where you create the app."
        )
    state = get_state(app)
    accounts = sync_service.accounts_to_sync(state)
    scope = installation.installation_id(state)
    state.db.session.commit()
    started = fleet.start_or_resume(
        fleet.redis_client(state), scope, accounts, stale_after=state.settings.sync_lock_ttl
    )
    for account_id, stripe_id in started.to_queue:
        celery.send_task(SYNC_TASK, args=[started.run_id, account_id, stripe_id])
    return started


def init_celery(celery: Celery, app: Flask) -> None:
    """Register Flask-FinConn's tasks on ``celery`` for ``app`` and schedule the sweep.

    The tasks push an app context of ``app`` themselves, so they work with or without the
    ``FlaskTask`` base class of Flask's guide. ``app.extensions["celery"]`` is set when the
    app has none yet (the guide's place for it). When ``FINCONN_CELERY_VISIBILITY_TIMEOUT``
    is set, Celery's ``broker_transport_options["visibility_timeout"]`` is set to it (unless
    the host set one); otherwise Celery's options are left as they are.
    """
    state = get_state(app)  # fail here, not in a worker, when init_app was not called
    app.extensions.setdefault("celery", celery)
    # The visibility timeout is the host's whole Celery app's: a shorter one would deliver
    # its tasks with a longer ETA or a longer run twice. So it is set only when asked for.
    visibility = state.settings.celery_visibility_timeout
    if visibility is not None:
        options = dict(celery.conf.broker_transport_options or {})
        options.setdefault("visibility_timeout", visibility)
        celery.conf.broker_transport_options = options
    app.extensions[PUBLISHER_KEY] = _Publisher(celery)

    # acks_late: a worker that dies mid-task leaves the message to be delivered again;
    # the claim makes that harmless, and the sweep covers a message that is lost anyway.
    # shared=False: these close over ``app``, so other Celery apps must not adopt them.
    @celery.task(name=PROCESS_TASK, ignore_result=True, acks_late=True, shared=False)
    def process_events(event_ids: list[str]) -> dict[str, int]:
        outcomes: dict[str, int] = {}
        with app.app_context():
            state = get_state(app)
            for event_id in event_ids:
                outcome = events.process_event(state, event_id)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
        return outcomes

    @celery.task(name=SWEEP_TASK, ignore_result=True, shared=False)
    def sweep_events() -> int:
        with app.app_context():
            return len(events.requeue(get_state(app)))

    # The fleet sync: one task per account, retried while another worker holds the
    # account's lock; acks_late so a killed worker's account is delivered again (after the
    # visibility timeout), besides being queued again by a ``sync --all`` that resumes.
    @celery.task(
        name=SYNC_TASK, bind=True, ignore_result=True, acks_late=True, shared=False,
        max_retries=None,
    )  # fmt: skip
    def sync_account(task: Any, run_id: str, account_id: str, stripe_id: str) -> None:
        with app.app_context():
            state = get_state(app)
            wait = fleet.sync_one(state, fleet.redis_client(state), run_id, account_id, stripe_id)
        if wait:
            raise task.retry(countdown=wait)

    @celery.task(name=FLEET_TASK, ignore_result=True, shared=False)
    def sync_fleet() -> str:
        """Start a run over every account not disconnected (schedule it on Celery beat)."""
        with app.app_context():
            return start_fleet_sync(app).run_id

    schedule: dict[str, Any] = dict(celery.conf.beat_schedule or {})
    schedule.setdefault(SWEEP_TASK, {"task": SWEEP_TASK, "schedule": SWEEP_INTERVAL})
    celery.conf.beat_schedule = schedule
