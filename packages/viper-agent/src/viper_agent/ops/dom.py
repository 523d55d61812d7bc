"""DOM reads and actions on a CSS selector: query, click, type, wait.

Element states are polled from the page (every 50 ms) rather than watched with observers, so
a navigation in the middle of a wait simply restarts the check in the new document.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from viper_agent.browser import Page
from viper_agent.cdp import CDPError
from viper_agent.cdp.generated import input as cdp_input
from viper_agent.ops.script import evaluate, js_call
from viper_protocol.errors import ActionTimeout, ElementNotFound, ScriptError, ValidationFailed
from viper_protocol.models.browser import (
    ClickRequest,
    DomQuery,
    DomResult,
    ElementState,
    TypeRequest,
)
from viper_protocol.models.common import JSONObject

logger = logging.getLogger(__name__)

POLL = 0.05
LONG_TEXT = 256  # longer texts without a delay are inserted at once, not key by key

_QUERY = """(sel, fmt, name, all) => {
  const els = Array.from(document.querySelectorAll(sel));
  const read = el => fmt === 'html' ? el.outerHTML
    : fmt === 'text' ? (el.innerText ?? el.textContent) : el.getAttribute(name);
  return {count: els.length, values: (all ? els : els.slice(0, 1)).map(read)};
}"""

_STATE = """(sel) => {
  const el = document.querySelector(sel);
  if (!el) return {attached: false, visible: false};
  const r = el.getBoundingClientRect(), s = getComputedStyle(el);
  const visible = r.width > 0 && r.height > 0 && s.visibility !== 'hidden'
    && s.display !== 'none';
  return {attached: true, visible};
}"""

_CENTER = """(sel) => {
  const el = document.querySelector(sel);
  if (!el) return null;
  el.scrollIntoView({block: 'center', inline: 'center', behavior: 'instant'});
  const r = el.getBoundingClientRect();
  return {x: r.left + r.width / 2, y: r.top + r.height / 2};
}"""

_FOCUS = """(sel, clear) => {
  const el = document.querySelector(sel);
  if (!el) return false;
  el.focus();
  if (clear) {
    if ('value' in el) { el.value = ''; el.dispatchEvent(new Event('input', {bubbles: true})); }
    else if (el.isContentEditable) { el.textContent = ''; }
  }
  if ('value' in el && typeof el.setSelectionRange === 'function') {
    try { el.setSelectionRange(el.value.length, el.value.length); } catch (e) {}
  }
  return true;
}"""


def _selector_error(exc: ScriptError) -> ValidationFailed | ScriptError:
    if "is not a valid selector" in str(exc.details.get("exception", "")):
        return ValidationFailed(
            "the selector is not valid CSS",
            {"errors": ["not a valid CSS selector @ $.selector"]},
        )
    return exc


async def _call(page: Page, function: str, *args: object) -> Any:
    try:
        return (await evaluate(page, js_call(function, *args))).value
    except ScriptError as exc:
        raise _selector_error(exc) from None


async def query(page: Page, q: DomQuery) -> DomResult:
    """Read the first match (every match with `all`).

    Raises:
        ElementNotFound: nothing matches (and `all` is not set).
        ValidationFailed: the selector is not valid CSS.
    """
    found = await _call(page, _QUERY, q.selector, q.format.value, q.name, q.all)
    count = int(found["count"])
    if count == 0 and not q.all:
        raise ElementNotFound(f"no element matches {q.selector!r}", {"selector": q.selector})
    values = [v if v is None else str(v) for v in found["values"]]
    return DomResult(
        selector=q.selector,
        format=q.format,
        count=count,
        value=values[0] if values else None,
        values=values if q.all else [],
        target=page.target_id,
    )


def _satisfied(state: ElementState, attached: bool, visible: bool) -> bool:
    return {
        ElementState.ATTACHED: attached,
        ElementState.VISIBLE: visible,
        ElementState.HIDDEN: not visible,
        ElementState.DETACHED: not attached,
    }[state]


async def wait_for(page: Page, selector: str, state: ElementState, timeout_ms: int) -> None:
    """Poll until the first match of `selector` is in `state`.

    Raises:
        ElementNotFound: waiting for visible/attached and nothing ever matched.
        ActionTimeout: the element exists but did not reach `state` in time.
        ValidationFailed: the selector is not valid CSS.
    """
    end = time.monotonic() + timeout_ms / 1000
    attached = visible = False
    while True:
        try:
            found = await _call(page, _STATE, selector)
            attached, visible = bool(found["attached"]), bool(found["visible"])
        except CDPError:
            pass  # the document is being replaced; check again in the next one
        if _satisfied(state, attached, visible):
            return
        if time.monotonic() >= end:
            break
        await asyncio.sleep(POLL)
    details: JSONObject = {"selector": selector, "state": state.value, "timeout_ms": timeout_ms}
    if state in (ElementState.VISIBLE, ElementState.ATTACHED) and not attached:
        raise ElementNotFound(f"no element matches {selector!r} after {timeout_ms} ms", details)
    raise ActionTimeout(
        f"{selector!r} did not become {state.value} within {timeout_ms} ms", details
    )


async def click(page: Page, req: ClickRequest) -> None:
    """Wait for the element to be visible, scroll it into view and click its centre."""
    await wait_for(page, req.selector, ElementState.VISIBLE, req.timeout_ms)
    point = await _call(page, _CENTER, req.selector)
    if point is None:
        raise ElementNotFound(f"{req.selector!r} went away", {"selector": req.selector})
    x, y = float(point["x"]), float(point["y"])
    await page.session.execute(cdp_input.dispatch_mouse_event(type="mouseMoved", x=x, y=y))
    for count in range(1, req.click_count + 1):
        for kind in ("mousePressed", "mouseReleased"):
            await page.session.execute(
                cdp_input.dispatch_mouse_event(
                    type=kind, x=x, y=y, button=req.button.value, click_count=count
                )
            )


async def type_text(page: Page, req: TypeRequest) -> None:
    """Focus the element (clearing it if asked) and type `req.text` into it."""
    await wait_for(page, req.selector, ElementState.VISIBLE, req.timeout_ms)
    if not await _call(page, _FOCUS, req.selector, req.clear):
        raise ElementNotFound(f"{req.selector!r} went away", {"selector": req.selector})
    if req.delay_ms == 0 and len(req.text) > LONG_TEXT:
        await page.session.execute(cdp_input.insert_text(text=req.text))
        return
    for char in req.text:
        await _press(page, char)
        if req.delay_ms:
            await asyncio.sleep(req.delay_ms / 1000)


async def _press(page: Page, char: str) -> None:
    if char in "\r\n":
        down = cdp_input.dispatch_key_event(
            type="keyDown", key="Enter", code="Enter", text="\r", windows_virtual_key_code=13
        )
        up = cdp_input.dispatch_key_event(
            type="keyUp", key="Enter", code="Enter", windows_virtual_key_code=13
        )
    else:
        down = cdp_input.dispatch_key_event(
            type="keyDown", key=char, text=char, unmodified_text=char
        )
        up = cdp_input.dispatch_key_event(type="keyUp", key=char)
    await page.session.execute(down)
    await page.session.execute(up)
