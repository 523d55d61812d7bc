"""Entry point: run a click command and, when it returns a coroutine, run that coroutine.

Commands return the coroutine of their `async def` implementation instead of calling
`asyncio.run` themselves, so the interactive shell can await the same commands inside its own
event loop (STYLE.md section 19).
"""

from __future__ import annotations

import asyncio
import inspect
import sys

import click

from viper_cli.main import cli
from viper_protocol.errors import ViperError


def main(argv: list[str] | None = None) -> int:
    """Run `viper` with `argv` (default: sys.argv) and return the exit status."""
    try:
        rv = cli.main(args=argv, prog_name="viper", standalone_mode=False)
        if inspect.iscoroutine(rv):
            asyncio.run(rv)
        elif isinstance(rv, int):  # click returns the code of an Exit in this mode
            return rv
    except ViperError as exc:
        suffix = "" if exc.code == "internal" else f" ({exc.code})"
        click.echo(f"Error: {exc.message}{suffix}", err=True)
        lines = exc.details.get("errors")
        for line in lines if isinstance(lines, list) else []:
            click.echo(f"  {line}", err=True)
        return 1
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted!", err=True)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
