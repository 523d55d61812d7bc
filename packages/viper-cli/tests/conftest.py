"""A stand-in Viper server on loopback for CLI tests: the CLI is what is under test here."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from viper_cli.__main__ import main
from viper_protocol.converter import converter, strict_converter
from viper_protocol.errors import AlreadyExists, ErrorEnvelope, NotFound, ViperError
from viper_protocol.models.vms import VM, CreateVMRequest, RuntimeName, VMList, VMStatus

RunCLI = Callable[..., Coroutine[Any, Any, tuple[int, str, str]]]


def _error(err: ViperError) -> web.Response:
    body = converter.unstructure(ErrorEnvelope(error=err.to_body()))
    return web.json_response(body, status=err.http_status)


class FakeServer:
    """Keeps VMs in a dict and answers like the real REST API does."""

    def __init__(self) -> None:
        self.vms: dict[str, VM] = {}
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.subscribers: list[asyncio.Queue[VM]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v1/vms", self.list)
        app.router.add_post("/api/v1/vms", self.create)
        app.router.add_get("/api/v1/vms/{name}", self.get)
        app.router.add_delete("/api/v1/vms/{name}", self.delete)
        app.router.add_get("/api/v1/events", self.events)
        return app

    async def events(self, request: web.Request) -> web.StreamResponse:
        """A VM_CREATED event for each VM created while the stream is open."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        queue: asyncio.Queue[VM] = asyncio.Queue()
        self.subscribers.append(queue)
        seq = 0
        try:
            while True:
                vm = await queue.get()
                seq += 1
                event = {
                    "id": seq,
                    "type": "VM_CREATED",
                    "vm": vm.name,
                    "status": "pending",
                    "message": "created",
                    "timestamp": vm.created_at.isoformat(),
                    "data": {},
                }
                await resp.write(
                    f"id: {seq}\nevent: VM_CREATED\ndata: {json.dumps(event)}\n\n".encode()
                )
        finally:
            self.subscribers.remove(queue)

    async def _record(self, request: web.Request) -> Any:
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.method, request.path, dict(request.query), body))
        return body

    async def list(self, request: web.Request) -> web.Response:
        await self._record(request)
        status = request.query.get("status")
        vms = [vm for vm in self.vms.values() if status in (None, vm.status)]
        return web.json_response(converter.unstructure(VMList(vms=vms)))

    async def create(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        req = strict_converter.structure(body, CreateVMRequest)
        if req.name in self.vms:
            return _error(AlreadyExists(f"a VM named {req.name!r} exists"))
        now = datetime.now(UTC)
        vm = VM(
            id="abc123",
            name=req.name,
            status=VMStatus.RUNNING,
            runtime=req.runtime or RuntimeName.PROCESS,
            isolated=False,
            cpu_cores=req.cpu_cores,
            memory_mb=req.memory_mb,
            labels=req.labels,
            created_at=now,
            updated_at=now,
        )
        self.vms[vm.name] = vm
        for queue in self.subscribers:
            queue.put_nowait(vm)
        return web.json_response(converter.unstructure(vm), status=201)

    async def get(self, request: web.Request) -> web.Response:
        await self._record(request)
        vm = self.vms.get(request.match_info["name"])
        if vm is None:
            return _error(NotFound(f"no VM named {request.match_info['name']!r}"))
        return web.json_response(converter.unstructure(vm))

    async def delete(self, request: web.Request) -> web.Response:
        await self._record(request)
        vm = self.vms.pop(request.match_info["name"], None)
        if vm is None:
            return _error(NotFound(f"no VM named {request.match_info['name']!r}"))
        return web.json_response(converter.unstructure(vm))


@pytest.fixture
async def fake_server() -> Any:
    fake = FakeServer()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url(""))  # type: ignore[attr-defined]
    yield fake
    await server.close()


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> RunCLI:
    """Run `viper ARGS...` in a thread (it runs its own event loop) and capture its output."""

    async def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(main, list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def parse_json(text: str) -> Any:
    return json.loads(text)
