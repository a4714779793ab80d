"""``flask finconn ...``: inspect the configuration and the linked accounts.

The commands run in an app context (``AppGroup``) and call the same services as the
routes. In sandbox mode the emulator's own commands live under ``flask finconn sandbox``.
"""

from __future__ import annotations

from typing import IO

import click
from flask.cli import AppGroup, with_appcontext

from .errors import NotFound, WebhookSignatureError
from .extension import get_state, optional_module
from .services import accounts as accounts_service
from .services import events as events_service
from .webhooks import verify

finconn_cli = AppGroup("finconn", help="Flask-FinConn: Stripe Financial Connections.")


@finconn_cli.command("info")
def info() -> None:
    """Show the mode, the blueprint prefix and the permissions asked for."""
    state = get_state()
    settings = state.settings
    mode = (
        "sandbox (simulated banks)"
        if state.sandbox is not None
        else ("live" if settings.livemode else "Stripe test mode")
    )
    click.echo(f"mode: {mode}")
    click.echo(f"url prefix: {settings.url_prefix or '/'}")
    click.echo(f"permissions: {', '.join(settings.permissions)}")
    click.echo(f"prefetch: {', '.join(settings.prefetch) or '-'}")
    click.echo(f"task queue: {settings.task_queue}")


@finconn_cli.command("accounts")
@click.argument("holder_id")
def accounts(holder_id: str) -> None:
    """List the accounts linked by one holder."""
    found = accounts_service.list_accounts(get_state(), holder_id)
    if not found:
        click.echo(f"No accounts linked for holder {holder_id}.")
        return
    for account in found:
        balance = account.latest_balance
        amount = f"{balance.current} {balance.currency}" if balance is not None else "-"
        click.echo(
            f"{account.id}  {account.institution_name} {account.display_name or ''} "
            f"*{account.last4 or '----'}  {account.status}  balance {amount}"
        )


EVENT_STATUSES = ("pending", "processing", "processed", "failed")


@finconn_cli.group("events", invoke_without_command=True)
@click.option("--status", type=click.Choice(EVENT_STATUSES), help="Only events in this status.")
@click.option("--type", "types", multiple=True, help="Only events of this type (repeatable).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.pass_context
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
            click.echo(f"    error: {event.last_error}")


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


@finconn_cli.command("webhook-secret")
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
    secrets = settings.webhook_secrets
    if not secrets:
        raise click.ClickException(
            "No webhook secret is configured: set FINCONN_WEBHOOK_SECRET (or "
            "STRIPE_WEBHOOK_SECRET) to your endpoint's whsec_... secret from the Stripe Dashboard."
        )
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
            verify(body, header, [secret], tolerance=settings.webhook_tolerance)
        except WebhookSignatureError as exc:
            click.echo(f"  {_mask(secret)} does not verify the delivery: {exc.message}")
        else:
            click.echo(f"  {_mask(secret)} verifies the delivery.")
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


FEATURE_CHOICES = ("balance", "ownership", "transactions")


def _mount_sandbox_cli() -> None:
    module = optional_module("flask_finconn.sandbox.cli")
    if module is not None:
        # Our own group: `deliver` needs this app, the sandbox's standalone CLI has none.
        group = AppGroup("sandbox", help=module.sandbox_cli.help)
        for name, command in module.sandbox_cli.commands.items():
            group.add_command(command, name)
        group.add_command(sandbox_deliver)
        finconn_cli.add_command(group, "sandbox")


_mount_sandbox_cli()
