"""Where webhook events are processed: ``FINCONN_TASK_QUEUE`` (``inline`` or ``celery``).

A queue only has to carry event ids to a worker that calls
:func:`flask_finconn.services.events.process_event` in an app context; the claim there
makes sure one event is processed once however often its id is queued. That is the whole
interface (:class:`TaskQueue`), so another queue (RQ, Dramatiq) is a small class.

Celery, with the app factory pattern of Flask's Celery guide::

    from celery import Celery
    from flask_finconn.tasks import init_celery

    celery = Celery(__name__, broker="redis://localhost:6379/0")
    app = create_app()                     # FINCONN_TASK_QUEUE = "celery"
    init_celery(celery, app)

``init_celery`` registers the tasks ``flask_finconn.process_event`` and
``flask_finconn.sweep_events`` on the host's Celery app, and schedules the sweep on Celery
beat every :data:`SWEEP_INTERVAL` seconds. Run ``celery -A yourmodule worker -B`` (or a
separate ``beat``). The web processes only publish ids, with ``send_task``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from flask import Flask

from .errors import ConfigurationError
from .extension import FinConnState

if TYPE_CHECKING:
    from celery import Celery

__all__ = [
    "PROCESS_TASK",
    "SWEEP_INTERVAL",
    "SWEEP_TASK",
    "CeleryQueue",
    "InlineQueue",
    "TaskQueue",
    "get_queue",
    "init_celery",
]

PROCESS_TASK = "flask_finconn.process_event"
SWEEP_TASK = "flask_finconn.sweep_events"
SWEEP_INTERVAL = 60.0


class TaskQueue(Protocol):
    """Carries event ids to whatever processes them."""

    #: True when :meth:`enqueue` processes before it returns (no worker involved).
    inline: bool

    def enqueue(self, app: Flask, event_ids: Sequence[str]) -> None:
        """Arrange for each event to be processed (duplicates are harmless)."""


class InlineQueue:
    """Processes events right away, in the calling request or command."""

    inline = True

    def enqueue(self, app: Flask, event_ids: Sequence[str]) -> None:
        from .extension import get_state
        from .services import events

        with app.app_context():
            state = get_state(app)
            for event_id in event_ids:
                events.process_event(state, event_id)


class CeleryQueue:
    """Publishes each id as a ``flask_finconn.process_event`` task on the app's Celery."""

    inline = False

    def enqueue(self, app: Flask, event_ids: Sequence[str]) -> None:
        celery = app.extensions.get("celery")
        if celery is None:
            raise ConfigurationError(
                "FINCONN_TASK_QUEUE is 'celery' but the app has no Celery instance; call "
                "flask_finconn.tasks.init_celery(celery, app) where you create the app."
            )
        for event_id in event_ids:
            celery.send_task(PROCESS_TASK, args=[event_id])


QUEUES: dict[str, TaskQueue] = {"inline": InlineQueue(), "celery": CeleryQueue()}


def get_queue(state: FinConnState) -> TaskQueue:
    """The queue ``FINCONN_TASK_QUEUE`` names."""
    return QUEUES[state.settings.task_queue]


def init_celery(celery: Celery, app: Flask) -> None:
    """Register Flask-FinConn's tasks on ``celery`` for ``app`` and schedule the sweep.

    The tasks push an app context of ``app`` themselves, so they work with or without the
    ``FlaskTask`` base class of Flask's guide. ``app.extensions["celery"]`` is set when the
    app has none yet (the guide's place for it), which is where enqueueing looks.
    """
    from .extension import get_state
    from .services import events

    get_state(app)  # fail here, not in a worker, when init_app was not called
    app.extensions.setdefault("celery", celery)

    # acks_late: a worker that dies mid-task leaves the message to be delivered again;
    # the claim makes that harmless, and the sweep covers a message that is lost anyway.
    # shared=False: these close over ``app``, so other Celery apps must not adopt them.
    @celery.task(name=PROCESS_TASK, ignore_result=True, acks_late=True, shared=False)
    def process_event(event_id: str) -> str:
        with app.app_context():
            return events.process_event(get_state(app), event_id)

    @celery.task(name=SWEEP_TASK, ignore_result=True, shared=False)
    def sweep_events() -> int:
        with app.app_context():
            return len(events.requeue(get_state(app)))

    schedule: dict[str, Any] = dict(celery.conf.beat_schedule or {})
    schedule.setdefault(SWEEP_TASK, {"task": SWEEP_TASK, "schedule": SWEEP_INTERVAL})
    celery.conf.beat_schedule = schedule
