"""``sandbox_cli``: the click group behind ``flask finconn sandbox`` and ``python -m``."""

from __future__ import annotations

import click

from .core import Sandbox


@click.group("sandbox", help="Run the offline Stripe Financial Connections sandbox.")
def sandbox_cli() -> None:
    pass


@sandbox_cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=12111, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--database",
    default=None,
    help="SQLite file holding the sandbox's state (':memory:' for a throwaway one). Default: "
    "under `flask`, the app's sandbox database (FINCONN_SANDBOX_DATABASE or its instance "
    "folder), so the server shares the app's state; otherwise finconn-sandbox.sqlite3.",
)
@click.option(
    "--refresh-delay",
    default=1.0,
    show_default=True,
    type=float,
    help="Seconds a refresh stays pending before it finishes.",
)
@click.option(
    "--settlement-delay",
    default=5.0,
    show_default=True,
    type=float,
    help="Seconds an ACH debit stays processing before it settles.",
)
@click.option(
    "--webhook-url",
    multiple=True,
    help="Deliver every event to this URL (repeat for several).",
)
@click.option(
    "--webhook-secret",
    default=None,
    help="The whsec_ secret to sign deliveries with (default: one is generated and printed).",
)
def serve(
    host: str,
    port: int,
    database: str | None,
    refresh_delay: float,
    settlement_delay: float,
    webhook_url: tuple[str, ...],
    webhook_secret: str | None,
) -> None:
    """Serve Stripe's API (customers, Financial Connections, events, ACH payments) over
    HTTP, and the hosted microdeposit verification page under /sandbox/.

    Point an SDK at it with base address http://HOST:PORT and any sk_test_ key.
    """
    from werkzeug.serving import run_simple

    from .server import make_app

    database = database or _app_database() or "finconn-sandbox.sqlite3"
    sandbox = Sandbox(database, refresh_delay=refresh_delay, settlement_delay=settlement_delay)
    for url in webhook_url:
        endpoint = sandbox.add_webhook_endpoint(url=url, secret=webhook_secret)
        click.echo(f"Delivering events to {url} signed with {endpoint['secret']}")
    sandbox.start_background()
    click.echo(
        f"Stripe FC sandbox on http://{host}:{port} (state: {database}); "
        f"use api key {sandbox.api_key}. Press Ctrl+C to stop."
    )
    try:
        run_simple(host, port, make_app(sandbox), threaded=True, use_reloader=False)
    finally:
        sandbox.close()


def _app_database() -> str | None:
    """The sandbox database of the Flask app ``flask`` would load, if there is one."""
    import os

    from flask.cli import NoAppException, ScriptInfo

    info = click.get_current_context().find_object(ScriptInfo)
    if info is None:
        return None
    try:
        app = info.load_app()
    except NoAppException:
        return None
    configured = app.config.get("FINCONN_SANDBOX_DATABASE")
    if configured:
        return str(configured)
    return os.path.join(app.instance_path, "finconn-sandbox.sqlite3")
