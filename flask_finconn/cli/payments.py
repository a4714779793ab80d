"""``flask finconn payments``: list the debits, show one, re-read stuck ones from Stripe, and
settle the ones that need review (``attach``, ``mark-failed``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import click
from flask.cli import AppGroup, with_appcontext

from ..errors import FinConnError, NotFound
from ..services import payment_review
from ..services import payments as payments_service
from ..state import get_state


def _payment_line(payment: Any) -> str:
    failure = f"  {payment.failure_code}" if payment.failure_code else ""
    return (
        f"{payment.id}  {payment.holder_id}  {payment.amount} {payment.currency}  "
        f"{payment.status}{failure}  {payment.stripe_id or '(not submitted)'}  "
        f"{payment.created_at:%Y-%m-%d %H:%M}  {payment.description}"
    )


@click.group("payments", cls=AppGroup, invoke_without_command=True)
@click.option("--holder", help="Only this holder's debits.")
@click.option("--status", type=click.Choice(payments_service.STATUSES), help="Only this status.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option(
    "--refresh-stuck",
    is_flag=True,
    help="Re-read from Stripe the debits still processing (or never submitted); for cron.",
)
@click.option(
    "--older-than",
    default=60,
    show_default=True,
    type=click.IntRange(0),
    help="With --refresh-stuck: minutes since the debit last changed.",
)
@click.pass_context
@with_appcontext
def payments(
    ctx: click.Context,
    holder: str | None,
    status: str | None,
    limit: int,
    refresh_stuck: bool,
    older_than: int,
) -> None:
    """List debits, newest first; or re-read stuck ones from Stripe (--refresh-stuck).

    With --refresh-stuck the exit status is 1 when some debit could not be re-read, so a
    cron job notices; run it again, it is safe to repeat. A debit never answered by Stripe
    for more than 23 hours is not sent again: it is reported as "needs review" (exit 1) for
    a person to look up in the Stripe Dashboard and settle with `attach` or `mark-failed`.
    """
    if ctx.invoked_subcommand is not None:
        return
    state = get_state()
    if refresh_stuck:
        _refresh_stuck(state, timedelta(minutes=older_than))
        return
    found = payments_service.find_payments(state, holder_id=holder, status=status, limit=limit)
    if not found:
        click.echo("No payments match." if holder or status else "No payments stored.")
    for payment in found:
        click.echo(_payment_line(payment))


def _refresh_stuck(state: Any, older_than: timedelta) -> None:
    stuck = payments_service.stuck_payments(state, older_than)
    if not stuck:
        click.echo("No stuck payments.")
        return
    problems = []
    review = []
    for payment in stuck:
        before = payment.status
        try:
            fresh = payments_service.refresh_payment(state, payment)
        except FinConnError as exc:
            state.db.session.rollback()
            if exc.code == "payment_needs_review":
                review.append(payment.id)
                click.echo(f"{payment.id}  needs review: {exc.message}", err=True)
            else:
                problems.append(payment.id)
                click.echo(f"{payment.id}  could not be re-read: {exc.message}", err=True)
            continue
        click.echo(f"{fresh.id}  {before} -> {fresh.status}")
    failures = []
    if problems:
        failures.append(f"{len(problems)} payment(s) could not be re-read; run the command again")
    if review:
        failures.append(f"{len(review)} payment(s) need review by a person (see above)")
    if failures:
        raise click.ClickException("; ".join(failures) + ".")


@payments.command("show")
@click.argument("payment_id")
def show_payment(payment_id: str) -> None:
    """Show one debit by its fcpay_ or pi_ id."""
    try:
        payment = payments_service.find_payment(get_state(), payment_id)
    except NotFound as exc:
        raise click.ClickException(exc.message) from None
    click.echo(_payment_line(payment))
    click.echo(f"payment method: {payment.payment_method_id}")
    click.echo(f"idempotency key: {payment.idempotency_key}")
    if payment.failure_message:
        click.echo(f"failure: {payment.failure_message}")
    if payment.metadata_:
        click.echo(f"metadata: {payment.metadata_}")


@payments.command("attach")
@click.argument("payment_id")
@click.argument("payment_intent_id")
def attach(payment_id: str, payment_intent_id: str) -> None:
    """Settle a debit that needs review with the PaymentIntent found in the Stripe Dashboard.

    The PaymentIntent is read from Stripe and must be the one the debit created (metadata
    finconn_payment_id, customer, bank account, amount, currency); its status is then stored
    as a webhook's would be. Nothing is charged. Exit status 0 once the debit has that
    PaymentIntent (repeating the command is safe), 1 with the reason otherwise.
    """
    try:
        payment = payment_review.attach_payment_intent(get_state(), payment_id, payment_intent_id)
    except FinConnError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"{payment.id}  {payment.stripe_id}  {payment.status}")


@payments.command("mark-failed")
@click.argument("payment_id")
def mark_failed(payment_id: str) -> None:
    """Settle a debit that needs review as failed: Stripe has no PaymentIntent for it.

    The holder's PaymentIntents are listed from Stripe first; if one was created by this
    debit, nothing is changed and the command names it for `attach`. Nothing is charged.
    Exit status 0 once the debit is failed this way (repeating the command is safe), 1
    with the reason otherwise.
    """
    try:
        payment = payment_review.mark_payment_failed(get_state(), payment_id)
    except FinConnError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"{payment.id}  {payment.status}  {payment.failure_code}")
