"""The agent's configuration: where it listens and how it starts Chromium."""

from __future__ import annotations

import attrs

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_CHROMIUM = "/usr/bin/chromium"

# Flags that keep Chromium headless, quiet and self-contained on a closed network.
BASE_CHROMIUM_FLAGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-breakpad",
    "--disable-quic",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--metrics-recording-only",
    "--password-store=basic",
    "--use-mock-keychain",
    "--mute-audio",
)


@attrs.frozen(kw_only=True)
class AgentConfig:
    """Everything `create_app` needs.

    Attributes:
        host: the address the agent's HTTP server binds (used for nothing else).
        port: its port.
        chromium: path of the Chromium executable.
        chromium_args: extra Chromium flags appended after the built-in ones.
        startup_timeout: seconds to wait for Chromium's DevTools endpoint to answer.
        restart_delay: seconds to wait before restarting a crashed Chromium.
        log_history: how many log entries `/v1/logs/stream` replays to a new subscriber.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    chromium: str = DEFAULT_CHROMIUM
    chromium_args: tuple[str, ...] = ()
    startup_timeout: float = 30.0
    restart_delay: float = 0.2
    log_history: int = 1000
