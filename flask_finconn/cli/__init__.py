"""``flask finconn ...``: inspect the configuration and the linked accounts.

The commands run in an app context and call the same services as the routes. They live
in one module per topic (accounts and their data, webhooks, payments); this module puts
them in one ``finconn`` group. In sandbox mode the emulator's own commands live under
``flask finconn sandbox``.
"""

from __future__ import annotations

from flask.cli import AppGroup

from ..sandbox import cli as sandbox_cli_module
from . import accounts, payments, webhooks

finconn_cli = AppGroup("finconn", help="Flask-FinConn: Stripe Financial Connections.")
for _command in (
    accounts.info,
    accounts.accounts,
    accounts.erase_holder,
    accounts.refresh,
    accounts.sync,
    webhooks.events,
    webhooks.webhook_secret,
    payments.payments,
):
    finconn_cli.add_command(_command)


def _mount_sandbox_cli() -> None:
    # Our own group: `deliver` needs this app, the sandbox's standalone CLI has none.
    standalone = sandbox_cli_module.sandbox_cli
    group = AppGroup("sandbox", help=standalone.help)
    for name, command in standalone.commands.items():
        group.add_command(command, name)
    group.add_command(webhooks.sandbox_deliver)
    finconn_cli.add_command(group, "sandbox")


_mount_sandbox_cli()
