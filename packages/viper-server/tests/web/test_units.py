"""Pure parts of the HTTP layer: DevTools URL rewriting, JSON schemas, metrics text."""

from __future__ import annotations

from typing import get_args

from prometheus_client.parser import text_string_to_metric_families

from viper_protocol.models.events import Event, VMCreated
from viper_protocol.models.vms import VM, CreateVMRequest
from viper_server.web.metrics import MetricsText
from viper_server.web.routes.cdp import rewrite_discovery
from viper_server.web.schema import SchemaRegistry

WS_BASE = "ws://viper.test:7777/api/v1/vms/web1/cdp"


def test_rewrite_version() -> None:
    version = {
        "Browser": "Chrome/131.0.6778.85",
        "Protocol-Version": "1.3",
        "webSocketDebuggerUrl": "ws://127.0.0.1:41234/devtools/browser/4b1c-aa",
    }
    out = rewrite_discovery(version, WS_BASE)
    assert out["webSocketDebuggerUrl"] == f"{WS_BASE}/devtools/browser/4b1c-aa"
    assert out["Browser"] == version["Browser"]


def test_rewrite_list_with_token_and_frontend() -> None:
    targets = [
        {
            "id": "P1",
            "type": "page",
            "url": "http://127.0.0.1:8000/devtools/not-a-devtools-url",
            "webSocketDebuggerUrl": "ws://127.0.0.1:9222/devtools/page/P1",
            "devtoolsFrontendUrl": "/devtools/inspector.html?ws=127.0.0.1:9222/devtools/page/P1",
        }
    ]
    (out,) = rewrite_discovery(targets, WS_BASE, token="k y")
    assert out["webSocketDebuggerUrl"] == f"{WS_BASE}/devtools/page/P1?token=k+y"
    assert out["url"] == targets[0]["url"], "page URLs are not DevTools URLs"
    assert out["devtoolsFrontendUrl"] == (
        "/devtools/inspector.html?ws=viper.test:7777/api/v1/vms/web1/cdp/devtools/page/P1"
    )
    secure = rewrite_discovery(targets, WS_BASE.replace("ws:", "wss:"))[0]
    assert (
        "?wss=viper.test:7777/api/v1/vms/web1/cdp/devtools/page/P1"
        in (secure["devtoolsFrontendUrl"])
    )


def test_schema_of_request_and_record() -> None:
    registry = SchemaRegistry(strict=frozenset({CreateVMRequest}))
    assert registry.ref(CreateVMRequest) == {"$ref": "#/components/schemas/CreateVMRequest"}
    create = registry.schemas["CreateVMRequest"]
    assert create["required"] == ["name"]
    assert create["additionalProperties"] is False
    assert create["properties"]["cpu_cores"] == {"type": "integer", "default": 1}
    assert create["properties"]["ttl_seconds"] == {"type": ["integer", "null"], "default": None}
    assert create["properties"]["runtime"]["anyOf"][0]["enum"] == [
        "process",
        "qemu",
        "cloud-hypervisor",
    ]
    registry.ref(VM)
    vm = registry.schemas["VM"]
    assert "additionalProperties" not in vm
    assert vm["properties"]["ip"] == {
        "anyOf": [{"type": "string", "format": "ipv4"}, {"type": "null"}],
        "default": None,
    }
    assert vm["properties"]["created_at"] == {"type": "string", "format": "date-time"}
    assert vm["properties"]["devtools"]["anyOf"][0] == {"$ref": "#/components/schemas/DevToolsInfo"}
    assert "DevToolsInfo" in registry.schemas


def test_schema_of_event_union() -> None:
    registry = SchemaRegistry()
    registry.one_of("Event", get_args(Event))
    union = registry.schemas["Event"]
    assert union["discriminator"]["mapping"]["VM_CREATED"] == "#/components/schemas/VMCreated"
    created = registry.schemas[VMCreated.__name__]
    assert created["properties"]["type"] == {"type": "string", "const": "VM_CREATED"}
    assert "type" in created["required"]


def test_metrics_text_parses() -> None:
    out = MetricsText()
    out.gauge("vms", "VMs by status", {(("status", "running"),): 2, (("status", 'we"ird'),): 0})
    out.counter("vm_creates", "creates", {(): 3})
    out.histogram("vm_start_seconds", "start", (1.0, 5.0, float("inf")), [1, 2, 3], 7.5, 3)
    families = {f.name: f for f in text_string_to_metric_families(out.render())}
    assert {s.value for s in families["viper_vms"].samples} == {2.0, 0.0}
    assert families["viper_vm_creates"].type == "counter"
    assert families["viper_vm_creates"].samples[0].value == 3
    hist = families["viper_vm_start_seconds"]
    buckets = {s.labels["le"]: s.value for s in hist.samples if s.name.endswith("_bucket")}
    assert buckets == {"1.0": 1, "5.0": 2, "+Inf": 3}
