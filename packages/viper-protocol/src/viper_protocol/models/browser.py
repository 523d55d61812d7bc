"""Agent requests and responses: navigation, DOM, script, screenshot, profile, logs, DevTools.

Every action takes `timeout_ms` and an optional `target` (a DevTools target id; the first
page when omitted). GET endpoints take the same models from their query string, parsed with
`viper_protocol.converter.structure_query`.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import attrs

from viper_protocol.models.common import (
    InvalidField,
    JSONObject,
    JSONValue,
    float_range,
    int_range,
    str_length,
    timeout_ms,
)

MAX_URL_LENGTH = 8192
MAX_EXPRESSION_LENGTH = 1 << 20
MAX_SELECTOR_LENGTH = 4096
MAX_TEXT_LENGTH = 1 << 20


def _url(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    assert isinstance(value, str)
    if not value:
        raise InvalidField(attr.name, "must not be empty")
    if len(value) > MAX_URL_LENGTH:
        raise InvalidField(attr.name, f"must be at most {MAX_URL_LENGTH} characters")
    scheme, sep, _ = value.partition(":")
    if not sep or not scheme.isascii() or not scheme.replace("+", "").replace("-", "").isalnum():
        raise InvalidField(attr.name, "must be an absolute URL such as https://example.com/")
    if scheme.lower() in ("javascript", "chrome", "devtools", "chrome-untrusted"):
        raise InvalidField(attr.name, f"the {scheme!r} scheme is not allowed")


def _selector() -> str:
    selector: str = attrs.field(validator=str_length(1, MAX_SELECTOR_LENGTH))
    return selector


class WaitUntil(enum.StrEnum):
    """When a navigation counts as done."""

    LOAD = "load"
    DOMCONTENTLOADED = "domcontentloaded"
    NETWORKIDLE = "networkidle"


class DomFormat(enum.StrEnum):
    """What GET /v1/dom reads from a matched element."""

    HTML = "html"
    TEXT = "text"
    ATTRIBUTE = "attribute"


class MouseButton(enum.StrEnum):
    LEFT = "left"
    RIGHT = "right"
    MIDDLE = "middle"


class ElementState(enum.StrEnum):
    """What POST /v1/dom/wait waits for."""

    VISIBLE = "visible"
    ATTACHED = "attached"
    HIDDEN = "hidden"
    DETACHED = "detached"


class ImageFormat(enum.StrEnum):
    PNG = "png"
    JPEG = "jpeg"


class SameSite(enum.StrEnum):
    STRICT = "Strict"
    LAX = "Lax"
    NONE = "None"


class LogSource(enum.StrEnum):
    """Where a log entry comes from."""

    CONSOLE = "console"
    PAGE_ERROR = "page_error"
    NETWORK = "network"
    BROWSER = "browser"
    AGENT = "agent"


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class BrowserStatus(enum.StrEnum):
    """The Chromium supervisor's state."""

    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    CRASHED = "crashed"
    STOPPED = "stopped"


# --- navigation -----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class NavigateRequest:
    """POST /v1/navigation."""

    url: str = attrs.field(validator=_url)
    wait_until: WaitUntil = WaitUntil.LOAD
    timeout_ms: int = timeout_ms()
    target: str | None = None
    referrer: str | None = None


@attrs.frozen(kw_only=True)
class NavigationResult:
    """The outcome of a navigation: where it ended, the page title and the HTTP status."""

    url: str
    title: str
    status: int | None = None
    target: str


@attrs.frozen(kw_only=True)
class NavigationState:
    """GET /v1/navigation: the current page of a target and its history position."""

    url: str
    title: str
    target: str
    can_go_back: bool
    can_go_forward: bool


@attrs.frozen(kw_only=True)
class HistoryRequest:
    """POST /v1/navigation/{back,forward,reload,wait}."""

    wait_until: WaitUntil = WaitUntil.LOAD
    timeout_ms: int = timeout_ms()
    target: str | None = None
    ignore_cache: bool = False


@attrs.frozen(kw_only=True)
class ViewportRequest:
    """POST /v1/navigation/viewport: device metrics emulation."""

    width: int = attrs.field(validator=int_range(1, 16_384))
    height: int = attrs.field(validator=int_range(1, 16_384))
    device_scale_factor: float = attrs.field(default=1.0, validator=float_range(0.1, 10.0))
    mobile: bool = False
    timeout_ms: int = timeout_ms()
    target: str | None = None


@attrs.frozen(kw_only=True)
class UserAgentRequest:
    """POST /v1/navigation/user-agent: user agent override, with language and platform."""

    user_agent: str = attrs.field(validator=str_length(1, 1024))
    accept_language: str | None = None
    platform: str | None = None
    timeout_ms: int = timeout_ms()
    target: str | None = None


# --- DOM and script -------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class DomQuery:
    """GET /v1/dom: read the first element matching `selector` (every match with `all`)."""

    selector: str = _selector()
    format: DomFormat = DomFormat.HTML
    name: str | None = None
    all: bool = False
    timeout_ms: int = timeout_ms()
    target: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.format is DomFormat.ATTRIBUTE and not self.name:
            raise InvalidField("name", "is required when format is attribute")


@attrs.frozen(kw_only=True)
class DomResult:
    """What GET /v1/dom read: `value` of the first match, `values` of all (when asked)."""

    selector: str
    format: DomFormat
    count: int
    value: str | None = None
    values: list[str | None] = attrs.field(factory=list)
    target: str


@attrs.frozen(kw_only=True)
class ClickRequest:
    """POST /v1/dom/click."""

    selector: str = _selector()
    button: MouseButton = MouseButton.LEFT
    click_count: int = attrs.field(default=1, validator=int_range(1, 3))
    timeout_ms: int = timeout_ms()
    target: str | None = None


@attrs.frozen(kw_only=True)
class TypeRequest:
    """POST /v1/dom/type: focus the element and type `text` (after clearing it if asked)."""

    selector: str = _selector()
    text: str = attrs.field(validator=str_length(0, MAX_TEXT_LENGTH))
    clear: bool = False
    delay_ms: int = attrs.field(default=0, validator=int_range(0, 1000))
    timeout_ms: int = timeout_ms()
    target: str | None = None


@attrs.frozen(kw_only=True)
class WaitRequest:
    """POST /v1/dom/wait."""

    selector: str = _selector()
    state: ElementState = ElementState.VISIBLE
    timeout_ms: int = timeout_ms()
    target: str | None = None


@attrs.frozen(kw_only=True)
class DomActionResult:
    """The answer to click, type and wait."""

    selector: str
    target: str
    elapsed_ms: float


@attrs.frozen(kw_only=True)
class EvaluateRequest:
    """POST /v1/script/evaluate."""

    expression: str = attrs.field(validator=str_length(1, MAX_EXPRESSION_LENGTH))
    await_promise: bool = False
    timeout_ms: int = timeout_ms()
    target: str | None = None


@attrs.frozen(kw_only=True)
class EvaluateResult:
    """A JavaScript value by value; `type` is its JS type (`undefined` has value null)."""

    value: JSONValue = None
    type: str
    target: str


@attrs.frozen(kw_only=True)
class ScreenshotQuery:
    """GET /v1/screenshot."""

    full_page: bool = False
    format: ImageFormat = ImageFormat.PNG
    quality: int | None = attrs.field(default=None, validator=int_range(0, 100))
    timeout_ms: int = timeout_ms()
    target: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.quality is not None and self.format is not ImageFormat.JPEG:
            raise InvalidField("quality", "applies to jpeg only")


# --- tabs -----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class TargetInfo:
    """A page target (tab)."""

    id: str
    type: str
    url: str
    title: str


@attrs.frozen(kw_only=True)
class TargetList:
    """GET /v1/targets."""

    targets: list[TargetInfo]


@attrs.frozen(kw_only=True)
class NewTargetRequest:
    """POST /v1/targets: open a new tab."""

    url: str = attrs.field(default="about:blank", validator=_url)
    timeout_ms: int = timeout_ms()


# --- profile --------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Cookie:
    """A browser cookie. `expires` is seconds since the epoch; None for a session cookie."""

    name: str
    value: str
    domain: str
    path: str = "/"
    expires: float | None = None
    http_only: bool = False
    secure: bool = False
    same_site: SameSite | None = None


@attrs.frozen(kw_only=True)
class OriginStorage:
    """Web storage of one origin (`https://example.com`)."""

    origin: str
    local_storage: dict[str, str] = attrs.field(factory=dict)
    session_storage: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Profile:
    """GET/PUT /v1/profile: what carries a logged-in session from one browser to another."""

    cookies: list[Cookie] = attrs.field(factory=list)
    origins: list[OriginStorage] = attrs.field(factory=list)
    user_agent: str | None = None


@attrs.frozen(kw_only=True)
class ProfileImportResult:
    """The answer to PUT /v1/profile."""

    cookies: int
    origins: int


# --- logs, health, DevTools -----------------------------------------------------------------


@attrs.frozen(kw_only=True)
class LogEntry:
    """One line of /v1/logs/stream. `seq` is monotonic per agent run."""

    seq: int
    timestamp: datetime
    source: LogSource
    level: LogLevel
    message: str
    target: str | None = None
    data: JSONObject = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class DevToolsMetadata:
    """GET /v1/devtools: what Chromium says about itself, with the agent-relative WS path."""

    browser: str
    protocol_version: str
    user_agent: str
    v8_version: str
    webkit_version: str
    websocket_path: str
    websocket_url: str


@attrs.frozen(kw_only=True)
class BrowserHealth:
    """The supervised Chromium process."""

    status: BrowserStatus
    pid: int | None = None
    restarts: int = 0
    version: str | None = None
    last_exit_code: int | None = None


@attrs.frozen(kw_only=True)
class AgentHealth:
    """GET /v1/health. `status` is `ok` when the browser runs, else `degraded`."""

    status: str
    uptime_seconds: float
    agent_version: str
    browser: BrowserHealth
