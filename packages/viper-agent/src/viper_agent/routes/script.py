"""POST /v1/script/evaluate: a JavaScript result by value; a throw is an error, not a result."""

from __future__ import annotations

from aiohttp import web

from viper_agent.keys import browser_key
from viper_agent.ops.script import evaluate, remote_value, terminate
from viper_agent.web import deadline, json_reply, read_body
from viper_protocol.errors import ActionTimeout
from viper_protocol.models.browser import EvaluateRequest, EvaluateResult

routes = web.RouteTableDef()


@routes.post("/v1/script/evaluate")
async def evaluate_script(request: web.Request) -> web.Response:
    """Evaluate `expression` in a tab (awaiting its promise if asked)."""
    body = await read_body(request, EvaluateRequest)
    page = await request.app[browser_key].page(body.target)
    try:
        async with deadline(body.timeout_ms, "the script"):
            obj = await evaluate(page, body.expression, await_promise=body.await_promise)
    except ActionTimeout:
        await terminate(page)  # a script in an endless loop would block the tab for good
        raise
    return json_reply(EvaluateResult(value=remote_value(obj), type=obj.type, target=page.target_id))
