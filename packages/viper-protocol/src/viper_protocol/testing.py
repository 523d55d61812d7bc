"""Hypothesis strategies and factories for every protocol model, shared by all packages' tests.

Needs the `test` extra (hypothesis). `MODEL_STRATEGIES` maps each model class to a strategy
that produces only valid instances; the protocol's tests check that every model has one.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime
from ipaddress import IPv4Address
from typing import Any

from hypothesis import strategies as st

from viper_protocol.errors import ErrorBody, ErrorEnvelope
from viper_protocol.models import browser as b
from viper_protocol.models import events as ev
from viper_protocol.models import system as sy
from viper_protocol.models import vms as v
from viper_protocol.models.common import LABEL_KEY, JSONValue

__all__ = ["MODEL_STRATEGIES", "json_values", "make_vm", "names", "timestamps"]

names = st.from_regex(v.NAME_PATTERN, fullmatch=True)
short_text = st.text(max_size=24)
timestamps = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
json_values: st.SearchStrategy[JSONValue] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | short_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(short_text, children, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(short_text, json_values, max_size=4)
label_maps = st.dictionaries(
    st.from_regex(LABEL_KEY, fullmatch=True), st.text(max_size=40), max_size=5
)
timeouts = st.integers(min_value=1, max_value=600_000)
targets = st.none() | st.text(alphabet=string.hexdigits, min_size=1, max_size=32)
selectors = st.text(min_size=1, max_size=64)
urls = st.sampled_from(
    ["https://example.com/", "http://127.0.0.1:8080/a?b=c", "about:blank", "data:text/html,hi"]
)


def _opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def make_vm(**overrides: Any) -> v.VM:
    """A plausible running VM record, for tests that need one."""
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "id": "0123456789abcdef",
        "name": "demo",
        "status": v.VMStatus.RUNNING,
        "runtime": v.RuntimeName.PROCESS,
        "isolated": False,
        "cpu_cores": 1,
        "memory_mb": 512,
        "created_at": now,
        "updated_at": now,
    }
    fields.update(overrides)
    return v.VM(**fields)


_devtools_info = st.builds(
    v.DevToolsInfo,
    browser=short_text,
    protocol_version=short_text,
    user_agent=short_text,
    http_url=short_text,
    websocket_url=short_text,
)
_vm = st.builds(
    v.VM,
    id=st.text(alphabet="0123456789abcdef", min_size=8, max_size=32),
    name=names,
    status=st.sampled_from(v.VMStatus),
    runtime=st.sampled_from(v.RuntimeName),
    isolated=st.booleans(),
    cpu_cores=st.integers(1, 64),
    memory_mb=st.integers(256, 65536),
    labels=label_maps,
    ip=_opt(st.ip_addresses(v=4).map(lambda a: IPv4Address(int(a)))),
    mac=_opt(short_text),
    pid=_opt(st.integers(1, 2**22)),
    ttl_seconds=_opt(st.integers(1, 3600)),
    idle_timeout_seconds=_opt(st.integers(1, 3600)),
    expires_at=_opt(timestamps),
    created_at=timestamps,
    updated_at=timestamps,
    started_at=_opt(timestamps),
    stopped_at=_opt(timestamps),
    exit_code=_opt(st.integers(-64, 255)),
    message=_opt(short_text),
    devtools=_opt(_devtools_info),
)


def _event(cls: type[Any]) -> st.SearchStrategy[Any]:
    return st.builds(
        cls,
        id=st.integers(1, 2**40),
        vm=names,
        status=_opt(st.sampled_from(v.VMStatus)),
        message=short_text,
        timestamp=timestamps,
        data=json_objects,
    )


_cookie = st.builds(
    b.Cookie,
    name=short_text,
    value=short_text,
    domain=short_text,
    path=short_text,
    expires=_opt(st.floats(0, 4e9)),
    http_only=st.booleans(),
    secure=st.booleans(),
    same_site=_opt(st.sampled_from(b.SameSite)),
)
_origin = st.builds(
    b.OriginStorage,
    origin=short_text,
    local_storage=st.dictionaries(short_text, short_text, max_size=3),
    session_storage=st.dictionaries(short_text, short_text, max_size=3),
)
_browser_health = st.builds(
    b.BrowserHealth,
    status=st.sampled_from(b.BrowserStatus),
    pid=_opt(st.integers(1, 2**22)),
    restarts=st.integers(0, 100),
    version=_opt(short_text),
    last_exit_code=_opt(st.integers(-64, 255)),
)
_manifest = st.builds(
    sy.ImageManifest,
    kernel_version=short_text,
    chromium_version=short_text,
    agent_version=short_text,
    built_at=timestamps,
    files=st.dictionaries(short_text, short_text, max_size=3),
)
_dom_query = st.builds(
    b.DomQuery,
    selector=selectors,
    format=st.sampled_from([b.DomFormat.HTML, b.DomFormat.TEXT]),
    all=st.booleans(),
    timeout_ms=timeouts,
    target=targets,
) | st.builds(
    b.DomQuery,
    selector=selectors,
    format=st.just(b.DomFormat.ATTRIBUTE),
    name=st.text(min_size=1, max_size=10),
    all=st.booleans(),
    timeout_ms=timeouts,
    target=targets,
)
_screenshot = st.builds(
    b.ScreenshotQuery,
    full_page=st.booleans(),
    format=st.just(b.ImageFormat.PNG),
    timeout_ms=timeouts,
    target=targets,
) | st.builds(
    b.ScreenshotQuery,
    full_page=st.booleans(),
    format=st.just(b.ImageFormat.JPEG),
    quality=_opt(st.integers(0, 100)),
    timeout_ms=timeouts,
    target=targets,
)

MODEL_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    # vms
    v.CreateVMRequest: st.builds(
        v.CreateVMRequest,
        name=names,
        cpu_cores=st.integers(1, 64),
        memory_mb=st.integers(256, 65536),
        runtime=_opt(st.sampled_from(v.RuntimeName)),
        labels=label_maps,
        ttl_seconds=_opt(st.integers(1, v.MAX_TTL_SECONDS)),
        idle_timeout_seconds=_opt(st.integers(1, v.MAX_TTL_SECONDS)),
    ),
    v.DevToolsInfo: _devtools_info,
    v.VM: _vm,
    v.VMList: st.builds(v.VMList, vms=st.lists(_vm, max_size=3)),
    # events
    **{cls: _event(cls) for cls in ev.EVENT_CLASSES.values()},
    ev.UnknownEvent: st.builds(
        ev.UnknownEvent,
        id=st.integers(1, 2**40),
        vm=names,
        timestamp=timestamps,
        data=json_objects,
        type=st.just("VM_FUTURE"),
    ),
    # errors
    ErrorBody: st.builds(ErrorBody, code=short_text, message=short_text, details=json_objects),
    ErrorEnvelope: st.builds(
        ErrorEnvelope, error=st.builds(ErrorBody, code=short_text, message=short_text)
    ),
    # browser
    b.NavigateRequest: st.builds(
        b.NavigateRequest,
        url=urls,
        wait_until=st.sampled_from(b.WaitUntil),
        timeout_ms=timeouts,
        target=targets,
        referrer=_opt(urls),
    ),
    b.NavigationResult: st.builds(
        b.NavigationResult,
        url=short_text,
        title=short_text,
        status=_opt(st.integers(100, 599)),
        target=short_text,
    ),
    b.NavigationState: st.builds(
        b.NavigationState,
        url=short_text,
        title=short_text,
        target=short_text,
        can_go_back=st.booleans(),
        can_go_forward=st.booleans(),
    ),
    b.HistoryRequest: st.builds(
        b.HistoryRequest,
        wait_until=st.sampled_from(b.WaitUntil),
        timeout_ms=timeouts,
        target=targets,
        ignore_cache=st.booleans(),
    ),
    b.ViewportRequest: st.builds(
        b.ViewportRequest,
        width=st.integers(1, 16384),
        height=st.integers(1, 16384),
        device_scale_factor=st.floats(0.1, 10.0),
        mobile=st.booleans(),
        timeout_ms=timeouts,
        target=targets,
    ),
    b.UserAgentRequest: st.builds(
        b.UserAgentRequest,
        user_agent=st.text(min_size=1, max_size=40),
        accept_language=_opt(short_text),
        platform=_opt(short_text),
        timeout_ms=timeouts,
        target=targets,
    ),
    b.DomQuery: _dom_query,
    b.DomResult: st.builds(
        b.DomResult,
        selector=selectors,
        format=st.sampled_from(b.DomFormat),
        count=st.integers(0, 100),
        value=_opt(short_text),
        values=st.lists(_opt(short_text), max_size=3),
        target=short_text,
    ),
    b.ClickRequest: st.builds(
        b.ClickRequest,
        selector=selectors,
        button=st.sampled_from(b.MouseButton),
        click_count=st.integers(1, 3),
        timeout_ms=timeouts,
        target=targets,
    ),
    b.TypeRequest: st.builds(
        b.TypeRequest,
        selector=selectors,
        text=short_text,
        clear=st.booleans(),
        delay_ms=st.integers(0, 1000),
        timeout_ms=timeouts,
        target=targets,
    ),
    b.WaitRequest: st.builds(
        b.WaitRequest,
        selector=selectors,
        state=st.sampled_from(b.ElementState),
        timeout_ms=timeouts,
        target=targets,
    ),
    b.DomActionResult: st.builds(
        b.DomActionResult, selector=selectors, target=short_text, elapsed_ms=st.floats(0, 1e6)
    ),
    b.EvaluateRequest: st.builds(
        b.EvaluateRequest,
        expression=st.text(min_size=1, max_size=64),
        await_promise=st.booleans(),
        timeout_ms=timeouts,
        target=targets,
    ),
    b.EvaluateResult: st.builds(
        b.EvaluateResult, value=json_values, type=short_text, target=short_text
    ),
    b.ScreenshotQuery: _screenshot,
    b.TargetInfo: st.builds(
        b.TargetInfo, id=short_text, type=short_text, url=short_text, title=short_text
    ),
    b.TargetList: st.builds(
        b.TargetList,
        targets=st.lists(
            st.builds(
                b.TargetInfo, id=short_text, type=short_text, url=short_text, title=short_text
            ),
            max_size=3,
        ),
    ),
    b.NewTargetRequest: st.builds(b.NewTargetRequest, url=urls, timeout_ms=timeouts),
    b.Cookie: _cookie,
    b.OriginStorage: _origin,
    b.Profile: st.builds(
        b.Profile,
        cookies=st.lists(_cookie, max_size=3),
        origins=st.lists(_origin, max_size=3),
        user_agent=_opt(short_text),
    ),
    b.ProfileImportResult: st.builds(
        b.ProfileImportResult, cookies=st.integers(0, 100), origins=st.integers(0, 100)
    ),
    b.LogEntry: st.builds(
        b.LogEntry,
        seq=st.integers(0, 2**40),
        timestamp=timestamps,
        source=st.sampled_from(b.LogSource),
        level=st.sampled_from(b.LogLevel),
        message=short_text,
        target=_opt(short_text),
        data=json_objects,
    ),
    b.DevToolsMetadata: st.builds(
        b.DevToolsMetadata,
        browser=short_text,
        protocol_version=short_text,
        user_agent=short_text,
        v8_version=short_text,
        webkit_version=short_text,
        websocket_path=short_text,
        websocket_url=short_text,
    ),
    b.BrowserHealth: _browser_health,
    b.AgentHealth: st.builds(
        b.AgentHealth,
        status=st.sampled_from(["ok", "degraded"]),
        uptime_seconds=st.floats(0, 1e7),
        agent_version=short_text,
        browser=_browser_health,
    ),
    # system
    sy.Health: st.builds(sy.Health, status=st.just("ok"), version=short_text),
    sy.KVMInfo: st.builds(
        sy.KVMInfo,
        present=st.booleans(),
        usable=st.booleans(),
        accel=st.sampled_from(["kvm", "tcg"]),
        detail=short_text,
    ),
    sy.RuntimeInfo: st.builds(
        sy.RuntimeInfo,
        name=st.sampled_from(v.RuntimeName),
        available=st.booleans(),
        isolated=st.booleans(),
        reason=_opt(short_text),
    ),
    sy.ImageManifest: _manifest,
    sy.ImageInfo: st.builds(
        sy.ImageInfo,
        present=st.booleans(),
        path=short_text,
        manifest=_opt(_manifest),
        problem=_opt(short_text),
    ),
    sy.Capacity: st.builds(
        sy.Capacity,
        cpus=st.integers(1, 256),
        memory_total_mb=st.integers(0, 2**20),
        memory_available_mb=st.integers(0, 2**20),
        vms_total=st.integers(0, 1000),
        vms_running=st.integers(0, 1000),
        max_vms=st.integers(0, 1000),
        ips_free=_opt(st.integers(0, 65536)),
    ),
}

MODEL_STRATEGIES[sy.SystemInfo] = st.builds(
    sy.SystemInfo,
    version=short_text,
    kvm=MODEL_STRATEGIES[sy.KVMInfo],
    runtimes=st.lists(MODEL_STRATEGIES[sy.RuntimeInfo], max_size=3),
    default_runtime=st.sampled_from(v.RuntimeName),
    image=MODEL_STRATEGIES[sy.ImageInfo],
    capacity=MODEL_STRATEGIES[sy.Capacity],
    auth_required=st.booleans(),
)
