"""Running JavaScript in a page: evaluate by value, report exceptions as `ScriptError`."""

from __future__ import annotations

import contextlib
import json
import logging

from viper_agent.browser import Page
from viper_agent.cdp import CDPConnectionClosed, CDPError
from viper_agent.cdp.generated import runtime
from viper_protocol.errors import ScriptError
from viper_protocol.models.common import JSONObject, JSONValue

logger = logging.getLogger(__name__)

MAX_SCRIPT_SECONDS = 600.0


def js_call(function: str, *args: object) -> str:
    """An expression calling the JS `function` source with JSON-encoded `args`."""
    return f"({function})({', '.join(json.dumps(a) for a in args)})"


def _exception_details(details: runtime.ExceptionDetails) -> JSONObject:
    exc = details.exception
    out: JSONObject = {"text": details.text, "line": details.line_number}
    out["column"] = details.column_number
    if exc is not None:
        out["exception"] = exc.description or (str(exc.value) if exc.value is not None else None)
        out["class_name"] = exc.class_name
    return out


async def evaluate(
    page: Page, expression: str, *, await_promise: bool = False
) -> runtime.RemoteObject:
    """Evaluate `expression` in the page's main frame and return its result by value.

    Raises:
        ScriptError: the script threw (or its promise rejected), or the value cannot be
            returned by value.
    """
    try:
        result = await page.session.execute(
            runtime.evaluate(
                expression=expression,
                return_by_value=True,
                await_promise=await_promise,
                user_gesture=True,
                repl_mode=False,
            ),
            timeout=MAX_SCRIPT_SECONDS,  # the caller's deadline (timeout_ms) is the real bound
        )
    except CDPError as exc:
        raise ScriptError(f"the script failed: {exc.message}", {"text": exc.message}) from None
    if result.exception_details is not None:
        details = _exception_details(result.exception_details)
        what = details.get("exception") or details["text"]
        raise ScriptError(f"the script threw: {what}", details)
    return result.result


def remote_value(obj: runtime.RemoteObject) -> JSONValue:
    """The JSON value of a by-value result (`NaN`, `Infinity`, bigints become strings)."""
    if obj.unserializable_value is not None:
        return obj.unserializable_value
    value: JSONValue = obj.value
    return value


async def terminate(page: Page) -> None:
    """Stop a script that is still running (after its timeout)."""
    with contextlib.suppress(CDPError, CDPConnectionClosed, TimeoutError):
        await page.session.execute(runtime.terminate_execution(), timeout=2.0)
