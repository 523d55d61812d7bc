"""`viper-agent` command line (placeholder until the agent lands)."""

from __future__ import annotations

import argparse

from viper_agent import __version__


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the agent."""
    parser = argparse.ArgumentParser(prog="viper-agent", description="Run the Viper agent.")
    parser.add_argument("--version", action="version", version=f"viper-agent {__version__}")
    parser.parse_args(argv)


if __name__ == "__main__":
    main()
