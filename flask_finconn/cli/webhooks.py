"""``flask finconn`` commands about webhooks: the stored events and the signing secrets.

``events`` (list, ``replay``, ``sweep``), ``webhook-secret``, and ``sandbox deliver``.
"""

from __future__ import annotations

import time
from typing import IO

import click
from flask.cli import AppGroup, with_appcontext

from ..errors import NotFound, WebhookSignatureError
from ..services import events as events_service
from ..state import get_state
from ..webhooks import check_signature, parse_header

EVENT_STATUSES = ("pending", "processing", "processed", "failed", "ignored")


@click.group("events", cls=AppGroup, invoke_without_command=True)
@click.option("--status", type=click.Choice(EVENT_STATUSES), help="Only events in this status.")
@click.option("--type", "types", multiple=True, help="Only events of this type (repeatable).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.pass_context
@with_appcontext
def events(ctx: click.Context, status: str | None, types: tuple[str, ...], limit: int) -> None:
    """List stored webhook events, newest first; or replay or sweep them."""
    if ctx.invoked_subcommand is not None:
        return
    found = events_service.list_events(get_state(), status=status, types=types, limit=limit)
    if not found:
        click.echo("No webhook events match." if status or types else "No webhook events stored.")
        return
    for event in found:
        received = event.received_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        click.echo(
            f"{event.id}  {event.type}  {event.status}  attempts {event.attempts}  "
            f"received {received}  account {event.account_stripe_id or '-'}"
        )
        if event.last_error and event.status != "processed":
            label = "reason" if event.status == "ignored" else "error"
            click.echo(f"    {label}: {event.last_error}")


@events.command("replay")
@click.argument("event_id", required=False)
@click.option("--failed", is_flag=True, help="Process every failed event once.")
def replay_events(event_id: str | None, failed: bool) -> None:
    """Process stored events again, here and now: one by EVENT_ID, or all --failed ones."""
    if (event_id is None) == (not failed):
        raise click.UsageError("Give an event id or --failed (one of the two).")
    try:
        results = events_service.replay(get_state(), event_id, failed=failed)
    except NotFound as exc:
        raise click.ClickException(exc.message) from None
    if not results:
        click.echo("No failed events to replay.")
    for replayed, outcome in results:
        note = " (someone else is processing it)" if outcome == "skipped" else ""
        click.echo(f"{replayed}  {outcome}{note}")
    if any(outcome == "failed" for _, outcome in results):
        raise click.ClickException("Some events failed again; see `flask finconn events`.")


@events.command("sweep")
def sweep_events() -> None:
    """Queue events stuck, lost or failed with retries left (cron, when not on Celery beat)."""
    ids = events_service.requeue(get_state())
    click.echo(f"Queued {len(ids)} event(s) again." if ids else "Nothing to sweep.")


def _mask(secret: str) -> str:
    return f"whsec_...{secret[-4:]}" if len(secret) > 10 else "whsec_..."


@click.command("webhook-secret")
@with_appcontext
@click.option(
    "--payload",
    type=click.File("rb"),
    help="The body of a captured delivery, to see which secret (if any) verifies it.",
)
@click.option("--header", help="That delivery's Stripe-Signature header.")
def webhook_secret(payload: IO[bytes] | None, header: str | None) -> None:
    """Check the configured webhook secret(s), and optionally a captured delivery."""
    state = get_state()
    settings = state.settings
    secrets = settings.webhook_secrets  # init_app made sure there is at least one
    click.echo(f"{len(secrets)} webhook secret(s), tolerance {settings.webhook_tolerance} s:")
    for secret in secrets:
        click.echo(f"  {_mask(secret)}")
    if state.sandbox is not None:
        click.echo("Sandbox mode: the sandbox signs its deliveries with one of these.")
    if (payload is None) != (header is None):
        raise click.UsageError("Give both --payload and --header to check a delivery.")
    if payload is None or header is None:
        return
    body = payload.read()
    for secret in secrets:
        try:
            # Age aside: a capture is usually older than the tolerance, and said so below.
            check_signature(body, header, [secret], tolerance=0)
        except WebhookSignatureError as exc:
            click.echo(f"  {_mask(secret)} does not verify the delivery: {exc.message}")
        else:
            click.echo(f"  {_mask(secret)} verifies the delivery.")
            age = int(time.time()) - parse_header(header)[0]
            if age > settings.webhook_tolerance:
                click.echo(f"It was signed {age} s ago: the route refuses it now as stale.")
            return
    raise click.ClickException("No configured secret verifies that delivery.")


@click.command("deliver")
@click.option(
    "--wait-for-retries",
    is_flag=True,
    help="Leave failed deliveries to their backoff instead of retrying them now.",
)
@with_appcontext
def sandbox_deliver(wait_for_retries: bool) -> None:
    """Deliver the sandbox's pending webhook events to this app now."""
    sandbox = get_state().sandbox
    if sandbox is None:
        raise click.ClickException("This app uses real Stripe keys; there is no sandbox to flush.")
    attempts = sandbox.deliver_events(retry_now=not wait_for_retries)
    left = sandbox.pending_deliveries()
    click.echo(f"Made {attempts} delivery attempt(s); {left} delivery(ies) still pending.")
