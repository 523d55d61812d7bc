"""`viper-agent` command line: flags and environment, logging, then run the app until signalled.

SIGTERM and SIGINT stop it gracefully (aiohttp's `run_app`): open streams close, the CDP
connection closes, Chromium is terminated and reaped and its profile directory removed; the
exit code is then 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys

from aiohttp import web

from viper_agent import __version__
from viper_agent.config import DEFAULT_CHROMIUM, DEFAULT_HOST, DEFAULT_PORT, AgentConfig
from viper_protocol.errors import LaunchFailed

logger = logging.getLogger(__name__)


def _env_port(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_PORT
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"viper-agent: VIPER_AGENT_PORT must be a number, got {value!r}") from None


def parse_args(argv: list[str] | None = None) -> AgentConfig:
    """The configuration from flags, falling back to VIPER_AGENT_* variables, then defaults."""
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="viper-agent",
        description="Run the Viper agent: headless Chromium behind a small HTTP API.",
    )
    parser.add_argument("--version", action="version", version=f"viper-agent {__version__}")
    parser.add_argument(
        "--host",
        default=env.get("VIPER_AGENT_HOST") or DEFAULT_HOST,
        help="address to listen on (env VIPER_AGENT_HOST, default %(default)s)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=_env_port(env.get("VIPER_AGENT_PORT")),
        help="port to listen on (env VIPER_AGENT_PORT, default %(default)s)",
    )
    parser.add_argument(
        "--chromium",
        default=env.get("VIPER_AGENT_CHROMIUM") or DEFAULT_CHROMIUM,
        help="Chromium executable (env VIPER_AGENT_CHROMIUM, default %(default)s)",
    )
    parser.add_argument(
        "--chromium-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="extra Chromium flag, repeatable (env VIPER_AGENT_CHROMIUM_ARGS, shell-split)",
    )
    parser.add_argument(
        "--log-level",
        default=env.get("VIPER_AGENT_LOG_LEVEL") or "info",
        choices=["debug", "info", "warning", "error"],
        help="log level (env VIPER_AGENT_LOG_LEVEL, default %(default)s)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    extra = shlex.split(env.get("VIPER_AGENT_CHROMIUM_ARGS", "")) + list(args.chromium_arg)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return AgentConfig(
        host=args.host, port=args.port, chromium=args.chromium, chromium_args=tuple(extra)
    )


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve until SIGTERM or SIGINT."""
    config = parse_args(argv)
    from viper_agent.app import create_app

    logger.info("viper-agent %s starting on %s:%d", __version__, config.host, config.port)
    try:
        web.run_app(
            create_app(config),
            host=config.host,
            port=config.port,
            print=None,
            shutdown_timeout=5.0,
            access_log=None,
        )
    except LaunchFailed as exc:
        logger.error("viper-agent cannot start Chromium: %s", exc.message)
        tail = exc.details.get("output_tail")
        for line in tail if isinstance(tail, list) else []:
            logger.error("chromium: %s", line)
        raise SystemExit(1) from None
    except OSError as exc:
        # Chromium and its profile are already cleaned up by the app's cleanup contexts.
        logger.error("viper-agent cannot serve on %s:%d: %s", config.host, config.port, exc)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
