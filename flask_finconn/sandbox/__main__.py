"""``python -m flask_finconn.sandbox [serve] --port 12111``."""

from __future__ import annotations

import sys

from .cli import sandbox_cli


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        args = ["serve", *args]
    sandbox_cli.main(args=args, prog_name="python -m flask_finconn.sandbox")


if __name__ == "__main__":
    main()
