"""``flask finconn ...``: inspect the configuration and the linked accounts.

The commands run in an app context (``AppGroup``) and call the same services as the
routes. In sandbox mode the emulator's own commands live under ``flask finconn sandbox``.
"""

from __future__ import annotations

import click
from flask.cli import AppGroup

from .extension import get_state, optional_module
from .services import accounts as accounts_service

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


def _mount_sandbox_cli() -> None:
    module = optional_module("flask_finconn.sandbox.cli")
    if module is not None:
        finconn_cli.add_command(module.sandbox_cli, "sandbox")


_mount_sandbox_cli()
