"""Errors that carry their HTTP status, and the JSON body they travel in.

Domain code raises a `ViperError` subclass; one middleware (server and agent alike) renders it
as `{"error": {"code", "message", "details"}}` with `http_status`; the CLI turns the body back
into the same class with `error_from_body`.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from viper_protocol.models.common import JSONObject


@attrs.frozen(kw_only=True)
class ErrorBody:
    """What went wrong: a stable `code`, a sentence for people, and structured details."""

    code: str
    message: str
    details: JSONObject = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class ErrorEnvelope:
    """The whole error response: `{"error": ErrorBody}`."""

    error: ErrorBody


class ViperError(Exception):
    """Root of every error Viper reports over the wire."""

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, details: JSONObject | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: JSONObject = dict(details or {})

    def to_body(self) -> ErrorBody:
        """The `ErrorBody` this error renders as."""
        return ErrorBody(code=self.code, message=self.message, details=self.details)


class BadRequest(ViperError):
    """The request is malformed: not JSON, wrong Content-Type, a bad query parameter."""

    code = "bad_request"
    http_status = 400


class Unauthorized(ViperError):
    """No API key, or a wrong one."""

    code = "unauthorized"
    http_status = 401


class Forbidden(ViperError):
    """Authenticated but not allowed (for example a WebSocket from a foreign Origin)."""

    code = "forbidden"
    http_status = 403


class UnsupportedMediaType(ViperError):
    """A JSON endpoint got another Content-Type."""

    code = "unsupported_media_type"
    http_status = 415


class ValidationFailed(ViperError):
    """The body or query did not structure into the model; `details.errors` lists why."""

    code = "validation_failed"
    http_status = 422


class NotFound(ViperError):
    """Unknown VM, target or route."""

    code = "not_found"
    http_status = 404


class ElementNotFound(ViperError):
    """No element matches the selector (within the timeout)."""

    code = "element_not_found"
    http_status = 404


class AlreadyExists(ViperError):
    """A VM with that name exists."""

    code = "already_exists"
    http_status = 409


class InvalidState(ViperError):
    """The VM is not in a state that allows the operation."""

    code = "invalid_state"
    http_status = 409

    def __init__(self, message: str, *, state: str, required: list[str]) -> None:
        super().__init__(message, {"state": state, "required": list(required)})


class ScriptError(ViperError):
    """The page's JavaScript threw; `details` has the exception text and location."""

    code = "script_error"
    http_status = 422


class NavigationFailed(ViperError):
    """The browser could not load the URL (DNS, connection refused, ...)."""

    code = "navigation_failed"
    http_status = 502


class ActionTimeout(ViperError):
    """An action did not finish within its `timeout_ms`."""

    code = "timeout"
    http_status = 504


class LaunchFailed(ViperError):
    """The runtime failed to boot the VM."""

    code = "launch_failed"
    http_status = 500

    def __init__(
        self,
        message: str,
        *,
        exit_code: int | None = None,
        command: list[str] | None = None,
        output_tail: list[str] | None = None,
    ) -> None:
        super().__init__(
            message,
            {
                "exit_code": exit_code,
                "command": list(command or []),
                "output_tail": list(output_tail or []),
            },
        )


class BrowserUnavailable(ViperError):
    """Chromium is not running (starting, restarting after a crash, or stopped)."""

    code = "browser_unavailable"
    http_status = 503


class CapacityExhausted(ViperError):
    """No free IP, slot or memory for another VM."""

    code = "capacity_exhausted"
    http_status = 503


class AgentUnavailable(ViperError):
    """The server could not reach the VM's agent."""

    code = "agent_unavailable"
    http_status = 502


class AgentTimeout(ViperError):
    """The VM's agent did not answer in time."""

    code = "agent_timeout"
    http_status = 504


class Internal(ViperError):
    """A bug: something failed that should not have."""

    code = "internal"
    http_status = 500


def _all_subclasses(cls: type[ViperError]) -> list[type[ViperError]]:
    found: list[type[ViperError]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


def error_from_body(body: ErrorBody, http_status: int | None = None) -> ViperError:
    """The `ViperError` a received `ErrorBody` stands for (a plain `ViperError` if unknown)."""
    by_code = {cls.code: cls for cls in _all_subclasses(ViperError)}
    cls = by_code.get(body.code)
    err: ViperError
    if cls is None or cls in (InvalidState, LaunchFailed):
        # Their constructors take keywords; rebuild generically and keep the details.
        err = ViperError.__new__(cls or ViperError)
        ViperError.__init__(err, body.message, body.details)
    else:
        err = cls(body.message, body.details)
    if cls is None:
        err.code = body.code  # type: ignore[misc]
        if http_status is not None:
            err.http_status = http_status  # type: ignore[misc]
    return err
