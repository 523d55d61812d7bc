"""Bad input is rejected with readable lines that name the field: `expected int @ $.cpu_cores`."""

from __future__ import annotations

from typing import Any

import pytest
from cattrs import BaseValidationError

from viper_protocol.converter import format_validation_error, strict_converter, structure_query
from viper_protocol.models import browser as b
from viper_protocol.models.vms import CreateVMRequest, RuntimeName


def errors_of(body: object, cls: type[Any]) -> list[str]:
    with pytest.raises((BaseValidationError, TypeError, ValueError)) as info:
        strict_converter.structure(body, cls)
    return format_validation_error(info.value)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"name": "a", "cpu_cores": "3"}, "expected int, got string @ $.cpu_cores"),
        ({"name": "a", "cpu_cores": False}, "expected int, got boolean @ $.cpu_cores"),
        ({"name": "a", "cpu_cores": 2.0}, "expected int, got number @ $.cpu_cores"),
        ({"name": "a", "cpu_cores": None}, "expected int, got null @ $.cpu_cores"),
        ({"name": "a", "memory_mb": "512"}, "expected int, got string @ $.memory_mb"),
        ({"name": 5}, "expected string, got number @ $.name"),
        ({}, "required field missing @ $.name"),
        ({"name": "a", "cpus": 2}, "unknown field(s): cpus @ $"),
        (
            {"name": "a", "runtime": "docker"},
            "expected one of process, qemu, cloud-hypervisor @ $.runtime",
        ),
        ({"name": "a", "labels": []}, "expected object, got array @ $.labels"),
        ({"name": "a", "labels": {"team": 1}}, "expected string, got number @ $.labels['team']"),
        ({"name": "a", "ttl_seconds": "60"}, "expected int, got string @ $.ttl_seconds"),
        ([{"name": "a"}], "expected object, got array @ $"),
        ("a", "expected object, got string @ $"),
    ],
)
def test_wrong_types_are_rejected(body: object, expected: str) -> None:
    assert expected in errors_of(body, CreateVMRequest)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"name": "Upper"}, "@ $.name"),
        ({"name": "-lead"}, "@ $.name"),
        ({"name": "a" * 64}, "@ $.name"),
        ({"name": "under_score"}, "@ $.name"),
        ({"name": ""}, "@ $.name"),
        ({"name": "a", "cpu_cores": 0}, "must be between 1 and 64 @ $.cpu_cores"),
        ({"name": "a", "cpu_cores": 65}, "must be between 1 and 64 @ $.cpu_cores"),
        ({"name": "a", "memory_mb": 128}, "must be between 256 and 65536 @ $.memory_mb"),
        ({"name": "a", "ttl_seconds": 0}, "must be between 1 and 604800 @ $.ttl_seconds"),
        ({"name": "a", "labels": {"Bad Key": "x"}}, "@ $.labels"),
        ({"name": "a", "labels": {"k": "x" * 257}}, "@ $.labels"),
        ({"name": "a", "labels": {f"k{i}": "x" for i in range(65)}}, "at most 64 labels"),
    ],
)
def test_rule_breaking_values_are_rejected(body: object, expected: str) -> None:
    lines = errors_of(body, CreateVMRequest)
    assert any(expected in line for line in lines), lines


def test_several_errors_are_all_reported() -> None:
    lines = errors_of({"name": "a", "cpu_cores": "1", "memory_mb": True}, CreateVMRequest)
    assert sorted(lines) == [
        "expected int, got boolean @ $.memory_mb",
        "expected int, got string @ $.cpu_cores",
    ]


def test_a_valid_request_structures() -> None:
    req = strict_converter.structure(
        {
            "name": "web-1",
            "cpu_cores": 2,
            "memory_mb": 1024,
            "runtime": "qemu",
            "labels": {"team": "qa"},
        },
        CreateVMRequest,
    )
    assert req.runtime is RuntimeName.QEMU
    assert req.labels == {"team": "qa"}


def test_from_cli_args() -> None:
    req = CreateVMRequest.from_cli_args("x", labels=("a=b", "c="), runtime="process")
    assert req.labels == {"a": "b", "c": ""}
    with pytest.raises(ValueError, match="key=value"):
        CreateVMRequest.from_cli_args("x", labels=("nope",))


@pytest.mark.parametrize(
    ("body", "cls", "expected"),
    [
        ({"url": "example.com"}, b.NavigateRequest, "must be an absolute URL"),
        ({"url": ""}, b.NavigateRequest, "must not be empty @ $.url"),
        ({"url": "javascript:alert(1)"}, b.NavigateRequest, "not allowed @ $.url"),
        ({"url": "http://a", "wait_until": "idle"}, b.NavigateRequest, "expected one of load"),
        ({"url": "http://a", "timeout_ms": 0}, b.NavigateRequest, "@ $.timeout_ms"),
        (
            {"url": "http://a", "timeout_ms": "5"},
            b.NavigateRequest,
            "expected int, got string @ $.timeout_ms",
        ),
        ({"selector": ""}, b.ClickRequest, "must not be empty @ $.selector"),
        ({"selector": "a", "click_count": 4}, b.ClickRequest, "@ $.click_count"),
        ({"selector": "a"}, b.TypeRequest, "required field missing @ $.text"),
        ({"expression": ""}, b.EvaluateRequest, "must not be empty @ $.expression"),
        ({"expression": "1", "await_promise": 1}, b.EvaluateRequest, "expected boolean"),
        ({"width": 0, "height": 10}, b.ViewportRequest, "@ $.width"),
        ({"cookies": [{"name": "a"}]}, b.Profile, "required field missing @ $.cookies[0].value"),
        (
            {"selector": "a", "format": "attribute"},
            b.DomQuery,
            "is required when format is attribute @ $.name",
        ),
    ],
)
def test_agent_requests_are_validated(body: object, cls: type[Any], expected: str) -> None:
    lines = errors_of(body, cls)
    assert any(expected in line for line in lines), lines


def test_query_strings_convert_by_field_type() -> None:
    q = structure_query(
        strict_converter,
        {"full_page": "true", "format": "jpeg", "quality": "80"},
        b.ScreenshotQuery,
    )
    assert q == b.ScreenshotQuery(full_page=True, format=b.ImageFormat.JPEG, quality=80)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"full_page": "perhaps"}, "expected boolean, got string @ $.full_page"),
        ({"quality": "high", "format": "jpeg"}, "expected int, got string @ $.quality"),
        ({"quality": "50"}, "applies to jpeg only @ $.quality"),
        ({"format": "gif"}, "expected one of png, jpeg @ $.format"),
        ({"zoom": "2"}, "unknown field(s): zoom @ $"),
    ],
)
def test_bad_query_strings_are_rejected(query: dict[str, str], expected: str) -> None:
    with pytest.raises(BaseValidationError) as info:
        structure_query(strict_converter, query, b.ScreenshotQuery)
    assert expected in format_validation_error(info.value)


def test_json_values_must_be_json() -> None:
    lines = errors_of({"value": {1: 2}, "type": "object", "target": "t"}, b.EvaluateResult)
    assert lines == ["object keys must be strings @ $.value"]
