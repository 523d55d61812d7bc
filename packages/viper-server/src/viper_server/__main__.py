"""`viper-server`: parse flags and `VIPER_*` variables, set up logging, run the app.

Flags win over environment variables, which win over defaults. Binding an address other than
loopback without an API key is refused (exit status 2). SIGINT and SIGTERM shut down
gracefully: streams end, the proxy session closes, and the engine leaves VMs running for the
next start to adopt, unless `--stop-vms-on-exit`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from ipaddress import ip_address

from viper_server import __version__
from viper_server.config import RuntimeChoice, ServerConfig

logger = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 10.0


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def build_parser() -> argparse.ArgumentParser:
    """The command line; every option defaults to None so that the environment applies."""
    parser = argparse.ArgumentParser(
        prog="viper-server",
        description="Run the Viper server: one headless Chromium per microVM behind REST, "
        "events and a DevTools proxy.",
    )
    add = parser.add_argument
    add("--host", help="address to bind (VIPER_HOST, default 127.0.0.1)")
    add("--port", type=int, help="TCP port (VIPER_PORT, default 7777)")
    add("--state-dir", help="state directory (VIPER_STATE_DIR, default ~/.viper)")
    add(
        "--runtime",
        choices=[c.value for c in RuntimeChoice],
        help="default runtime for new VMs (VIPER_RUNTIME, default auto)",
    )
    add("--subnet", help="guest subnet CIDR (VIPER_SUBNET, default 192.168.127.0/24)")
    add("--images", help="guest image directory (VIPER_IMAGES, default <state-dir>/images)")
    add("--api-key", help="require this bearer token on every route but /healthz (VIPER_API_KEY)")
    add(
        "--accel",
        choices=["auto", "kvm", "tcg"],
        help="QEMU accelerator: auto probes whether KVM really runs guests at speed "
        "(VIPER_ACCEL, default auto)",
    )
    add(
        "--stop-vms-on-exit",
        action="store_true",
        default=None,
        help="destroy every VM at shutdown instead of leaving them for the next start",
    )
    add(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default INFO)",
    )
    add("--version", action="version", version=f"viper-server {__version__}")
    return parser


def load_config(args: argparse.Namespace) -> ServerConfig:
    """The config from the environment with the given flags on top.

    Raises:
        ValueError: a flag or variable holds a value of the wrong form.
    """
    return ServerConfig.from_env(
        host=args.host,
        port=args.port,
        state_dir=args.state_dir,
        runtime=args.runtime,
        subnet=args.subnet,
        images=args.images,
        api_key=args.api_key,
        stop_vms_on_exit=args.stop_vms_on_exit,
        accel=args.accel,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and run the server until SIGINT or SIGTERM.

    `viper-server setup [...]` instead runs the host preflight and network setup
    (`viper_server.network.__main__`), which `viper setup` calls.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["setup"]:
        from viper_server.network.__main__ import main as setup_main

        sys.exit(setup_main(argv[1:], prog="viper-server setup"))
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config(args)
    except (ValueError, TypeError) as exc:
        parser.exit(2, f"viper-server: error: {exc}\n")
    if not is_loopback(config.host) and not config.api_key:
        parser.exit(
            2,
            f"viper-server: error: refusing to listen on {config.host}, which is not a "
            "loopback address, without an API key: set --api-key or VIPER_API_KEY "
            "(or bind 127.0.0.1)\n",
        )
    from aiohttp import web

    from viper_server.app import create_app

    logger.info(
        "viper-server %s on %s:%d, state in %s, runtime %s%s",
        __version__,
        config.host,
        config.port,
        config.state_dir,
        config.runtime,
        ", API key required" if config.api_key else "",
    )
    # run_app turns SIGINT/SIGTERM into a graceful shutdown: on_shutdown, then the
    # cleanup contexts in reverse (the engine leaves or stops VMs per stop_vms_on_exit).
    web.run_app(
        create_app(config),
        host=config.host,
        port=config.port,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        print=None,
        access_log=logging.getLogger("aiohttp.access"),
    )


if __name__ == "__main__":
    main()
