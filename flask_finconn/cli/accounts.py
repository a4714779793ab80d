"""``flask finconn`` commands about holders and their accounts' data.

``info``, ``accounts``, ``erase-holder``, ``refresh`` and ``sync``: each runs in an app
context and calls the same services as the routes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import click
from flask.cli import with_appcontext

from ..errors import ConfigurationError, FinConnError, NotFound
from ..services import accounts as accounts_service
from ..services import fleet as fleet_service
from ..services import privacy
from ..services import refresh as refresh_service
from ..services import sync as sync_service
from ..state import REFRESH_FEATURES, get_state
from ..tasks import start_fleet_sync


@click.command("info")
@with_appcontext
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


@click.command("accounts")
@with_appcontext
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


@click.command("erase-holder")
@with_appcontext
@click.argument("holder_id")
@click.option("--yes", is_flag=True, help="Erase without asking (for scripts and cron).")
@click.option(
    "--scrub-customer", is_flag=True, help="Also blank the Stripe Customer's email and name."
)
def erase_holder(holder_id: str, yes: bool, scrub_customer: bool) -> None:
    """Erase everything stored about HOLDER_ID and disconnect their accounts at Stripe.

    Exit status 0 when the holder is erased (or nothing was stored), 1 when Stripe could
    not be reached or a debit of the holder is still in flight (nothing was deleted; run it
    again later), 2 without --yes and no terminal.
    """
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("Pass --yes to erase a holder without a terminal to confirm.")
        click.confirm(
            f"Erase every account, balance, owner and transaction of holder {holder_id}?",
            abort=True,
        )
    try:
        erased = privacy.erase_holder(get_state(), holder_id, scrub_customer=scrub_customer)
    except FinConnError as exc:
        click.echo(f"Could not erase holder {holder_id}: {exc.message}", err=True)
        sys.exit(1)
    if not erased.found:
        click.echo(f"Nothing is stored about holder {holder_id}.")
        return
    click.echo(
        f"Erased holder {holder_id}: {erased.accounts} account(s) "
        f"({len(erased.disconnected)} disconnected at Stripe), {erased.balances} balance(s), "
        f"{erased.owners} owner(s), {erased.transactions} transaction(s), "
        f"{erased.events_blanked} event payload(s) blanked"
        + (", Stripe Customer scrubbed." if erased.customer_scrubbed else ".")
    )


def _features(value: str | None) -> tuple[str, ...] | None:
    if not value:
        return None
    chosen = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    unknown = [f for f in chosen if f not in REFRESH_FEATURES]
    if unknown or not chosen:
        raise click.BadParameter(
            f"use a comma-separated list of {', '.join(REFRESH_FEATURES)}, not {value!r}.",
            param_hint="--features",
        )
    return chosen


def _progress(items: list[Any], label: str, **options: Any) -> Any:
    """A progress bar on stderr, so stdout stays the report cron mails or scripts read."""
    return click.progressbar(items, label=label, file=sys.stderr, show_pos=True, **options)


@click.command("refresh")
@with_appcontext
@click.argument("account_id", required=False)
@click.option(
    "--features",
    help="Comma-separated: balance, ownership, transactions. Default: all the holder granted.",
)
@click.option(
    "--max-age",
    default=24.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Without ACCOUNT_ID: refresh data last attempted more than this many hours ago.",
)
@click.option("--wait", is_flag=True, help="Poll Stripe until the refreshes finish.")
@click.option(
    "--timeout",
    default=120.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="With --wait: give up after this many seconds (exit status 1).",
)
@click.option(
    "--interval",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0.01),
    help="With --wait: seconds between polls.",
)
def refresh(
    account_id: str | None,
    features: str | None,
    max_age: float,
    wait: bool,
    timeout: float,
    interval: float,
) -> None:
    """Start refreshes of every stale active account, or of ACCOUNT_ID (fcacct_ or fca_).

    Results arrive by webhook; with --wait (for hosts Stripe cannot reach) this polls
    Stripe and stores them the same way. Exit status 1 when a refresh could not start,
    failed, or was still running at --timeout.
    """
    state = get_state()
    try:
        plan = refresh_service.plan_refreshes(
            state,
            account_id=account_id,
            features=_features(features),
            max_age=timedelta(hours=max_age),
        )
    except NotFound as exc:
        raise click.ClickException(exc.message) from None
    if not plan:
        click.echo("Nothing to refresh: every active account was refreshed recently.")
        return
    outcomes = []
    with _progress(plan, "Starting refreshes") as bar:
        for account, feats in bar:
            outcomes.append(refresh_service.run_refresh(state, account, feats))
    problems = []
    for outcome in outcomes:
        if outcome.error is None:
            click.echo(f"{outcome.account.id}: started {', '.join(outcome.features)}")
        else:
            click.echo(f"{outcome.account.id}: not started: {outcome.error.message}")
            problems.append(outcome.account.id)
    started = [(o.account, o.features) for o in outcomes if o.error is None]
    if wait and started:
        results = refresh_service.wait_for_refreshes(
            state, started, timeout=timeout, interval=interval
        )
        pending = failed = 0
        for acct, statuses in results.items():
            summary = ", ".join(f"{feature} {status}" for feature, status in statuses.items())
            click.echo(f"{acct}: {summary}")
            pending += list(statuses.values()).count("pending")
            failed += list(statuses.values()).count("failed")
        if pending:
            raise click.ClickException(
                f"{pending} refresh(es) were still running after {timeout:g} s; their results "
                "will still be stored when Stripe's webhook arrives or on the next run."
            )
        if failed:
            raise click.ClickException(f"{failed} refresh(es) failed at the bank.")
    if problems:
        raise click.ClickException(
            f"{len(problems)} account(s) could not be refreshed: {', '.join(problems)}."
        )


def _shown(item: Any) -> str | None:
    """The progress bar's item: an account id, or the rows a long sync has stored."""
    if isinstance(item, tuple):
        return str(item[0])
    return item if isinstance(item, str) else None


def _rows_shown(bar: Any, account_id: str) -> Callable[[int, int], None]:
    """An ``on_page`` that shows a long first sync's progress, row count by row count."""
    written = 0

    def show(rows: int, pages: int) -> None:
        nonlocal written
        written += rows
        bar.current_item = f"{account_id}: {written} rows"
        bar.render_progress()

    return show


@click.command("sync")
@with_appcontext
@click.argument("account_id", required=False)
@click.option(
    "--all",
    "fleet_run",
    is_flag=True,
    help="Queue every account on Celery, one task each, and wait for the run "
    "(needs init_celery and FINCONN_REDIS_URL).",
)
@click.option(
    "--timeout",
    default=3600.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="With --all: seconds to wait for the run (0: queue and return).",
)
def sync(account_id: str | None, fleet_run: bool, timeout: float) -> None:
    """Store new and changed transactions of ACCOUNT_ID, or of every linked account.

    Reads each account from Stripe and syncs up to its last finished transaction refresh
    (the same path as the webhook). Exit status 1 when an account could not be synced.

    With --all the accounts are synced by Celery workers, two never on one account, and
    a run cut short (a worker killed) resumes where it stopped when run again. Exit
    status: 0 every account synced, 1 some failed (each listed with the reason), 2 the
    run was still going after --timeout (its workers carry on).
    """
    if fleet_run:
        if account_id is not None:
            raise click.UsageError("Give either ACCOUNT_ID or --all, not both.")
        _fleet_sync(timeout)
        return
    state = get_state()
    found = sync_service.accounts_to_sync(state, account_id)
    if account_id is not None and not found:
        raise click.ClickException(f"There is no stored account {account_id}.")
    problems = []
    lines = []
    with _progress(found, "Syncing transactions", item_show_func=_shown) as bar:
        for acct, stripe_id in bar:
            try:
                applied = sync_service.sync_account_from_stripe(
                    state, stripe_id, on_page=_rows_shown(bar, acct)
                )
            except FinConnError as exc:
                state.db.session.rollback()
                lines.append(f"{acct}: failed: {exc.message}")
                problems.append(acct)
                continue
            done = applied.sync if applied is not None else None
            if done is None:
                lines.append(f"{acct}: up to date")
            else:
                lines.append(
                    f"{acct}: {done.added} added, {done.updated} updated ({done.pages} page(s))"
                )
    for line in lines:
        click.echo(line)
    if problems:
        raise click.ClickException(
            f"{len(problems)} account(s) could not be synced: {', '.join(problems)}; "
            "run the command again to resume where it stopped."
        )


def _fleet_sync(timeout: float) -> None:
    from flask import current_app

    try:
        started = start_fleet_sync(current_app)
    except ConfigurationError as exc:
        raise click.ClickException(exc.message) from None
    run_id = started.run_id
    if started.running:
        click.echo(
            f"Run {run_id} is still running (it made progress in the last "
            f"{get_state().settings.sync_lock_ttl:g} s); nothing queued again."
        )
    elif started.resumed:
        click.echo(
            f"Run {run_id} was unfinished; resuming it: {len(started.to_queue)} of "
            f"{started.total} account(s) queued again."
        )
    else:
        click.echo(f"Run {run_id}: {started.total} account(s) queued.")
    redis = fleet_service.redis_client(get_state())
    deadline = time.monotonic() + timeout
    shown = ""
    while True:
        status = fleet_service.summary(redis, run_id)
        if status.line() != shown:
            shown = status.line()
            click.echo(shown, err=True)
        if status.finished or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    click.echo(status.line())
    for failure in status.failures:
        click.echo(f"  failed: {failure}")
    if not status.finished:
        click.echo(
            f"The run is still going after {timeout:g} s; its workers carry on. Run the "
            "command again later: it resumes, and adds nothing twice."
        )
        sys.exit(2)
    if status.failed:
        sys.exit(1)
