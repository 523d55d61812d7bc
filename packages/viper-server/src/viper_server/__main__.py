"""`viper-server` command line (placeholder until the server lands)."""

from __future__ import annotations

import argparse

from viper_server import __version__


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the server."""
    parser = argparse.ArgumentParser(prog="viper-server", description="Run the Viper server.")
    parser.add_argument("--version", action="version", version=f"viper-server {__version__}")
    parser.parse_args(argv)


if __name__ == "__main__":
    main()
