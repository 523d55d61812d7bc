"""Errors carry their code and HTTP status, and survive a trip through ErrorBody."""

from __future__ import annotations

import pytest

from viper_protocol import errors as e
from viper_protocol.converter import converter


@pytest.mark.parametrize(
    ("cls", "code", "status"),
    [
        (e.ValidationFailed, "validation_failed", 422),
        (e.NotFound, "not_found", 404),
        (e.AlreadyExists, "already_exists", 409),
        (e.CapacityExhausted, "capacity_exhausted", 503),
        (e.AgentUnavailable, "agent_unavailable", 502),
        (e.AgentTimeout, "agent_timeout", 504),
        (e.Unauthorized, "unauthorized", 401),
        (e.UnsupportedMediaType, "unsupported_media_type", 415),
        (e.ScriptError, "script_error", 422),
        (e.ActionTimeout, "timeout", 504),
    ],
)
def test_codes_and_statuses(cls: type[e.ViperError], code: str, status: int) -> None:
    assert (cls.code, cls.http_status) == (code, status)
    err = cls("boom", {"k": 1})
    back = e.error_from_body(err.to_body())
    assert type(back) is cls
    assert (back.message, back.details) == ("boom", {"k": 1})


def test_codes_are_unique() -> None:
    codes = [cls.code for cls in e._all_subclasses(e.ViperError)]
    assert len(codes) == len(set(codes))


def test_structured_errors_keep_their_details() -> None:
    err = e.InvalidState("VM is starting", state="starting", required=["running"])
    assert err.details == {"state": "starting", "required": ["running"]}
    back = e.error_from_body(err.to_body())
    assert isinstance(back, e.InvalidState)
    assert back.details["state"] == "starting"
    launch = e.LaunchFailed("no kernel", exit_code=1, command=["qemu"], output_tail=["x"])
    assert e.error_from_body(launch.to_body()).details["command"] == ["qemu"]


def test_unknown_codes_become_plain_errors_with_status() -> None:
    back = e.error_from_body(e.ErrorBody(code="teapot", message="short and stout"), 418)
    assert type(back) is e.ViperError
    assert (back.code, back.http_status) == ("teapot", 418)


def test_envelope_wire_shape() -> None:
    env = e.ErrorEnvelope(error=e.NotFound("no VM named x").to_body())
    assert converter.unstructure(env) == {
        "error": {"code": "not_found", "message": "no VM named x", "details": {}}
    }
