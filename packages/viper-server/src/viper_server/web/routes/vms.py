"""VM routes: list, create (optionally waiting for the browser), get and delete.

Each handler structures its input with the strict converter (unknown fields and wrong types
are 422), makes one engine call and unstructures the result; the engine's `ViperError`s
(404 unknown VM, 409 duplicate name, 503 no capacity) are rendered by the error middleware.
"""

from __future__ import annotations

import attrs
from aiohttp import web

from viper_protocol.converter import converter, strict_converter, structure_query
from viper_protocol.models.vms import VM, CreateVMRequest, VMList, VMStatus
from viper_server.keys import engine_key
from viper_server.web.middleware import read_json
from viper_server.web.openapi import operation

routes = web.RouteTableDef()


@attrs.frozen(kw_only=True)
class ListQuery:
    """GET /api/v1/vms query: only VMs in this status."""

    status: VMStatus | None = None


@attrs.frozen(kw_only=True)
class CreateQuery:
    """POST /api/v1/vms query: `wait=true` answers once the browser answers DevTools."""

    wait: bool = False


def _vm_response(vm: VM, status: int = 200) -> web.Response:
    return web.json_response(converter.unstructure(vm), status=status)


@routes.get("/api/v1/vms")
@operation(summary="List VMs", tag="vms", query=ListQuery, response=VMList, errors=(422,))
async def list_vms(request: web.Request) -> web.Response:
    """Every VM, optionally only those in one status."""
    query = structure_query(strict_converter, request.query, ListQuery)
    vms = await request.app[engine_key].list_vms(query.status)
    return web.json_response(converter.unstructure(VMList(vms=vms)))


@routes.post("/api/v1/vms")
@operation(
    summary="Create a VM",
    tag="vms",
    body=CreateVMRequest,
    query=CreateQuery,
    response=VM,
    status=201,
    errors=(400, 409, 415, 422, 503),
    description="Answers at once with the VM `pending`/`starting`; with `?wait=true` only "
    "when its browser answers DevTools (status `running`), or with the launch error.",
)
async def create_vm(request: web.Request) -> web.Response:
    """Create a VM from `CreateVMRequest`; 201 with the VM."""
    query = structure_query(strict_converter, request.query, CreateQuery)
    req = strict_converter.structure(await read_json(request), CreateVMRequest)
    vm = await request.app[engine_key].create_vm(req, wait=query.wait)
    response = _vm_response(vm, status=201)
    response.headers["Location"] = f"/api/v1/vms/{vm.name}"
    return response


@routes.get("/api/v1/vms/{name}")
@operation(summary="Get one VM", tag="vms", response=VM, errors=(404,))
async def get_vm(request: web.Request) -> web.Response:
    """One VM: status, address, process, resources, DevTools info, timestamps."""
    return _vm_response(await request.app[engine_key].get_vm(request.match_info["name"]))


@routes.delete("/api/v1/vms/{name}")
@operation(summary="Destroy a VM", tag="vms", response=VM, errors=(404, 409))
async def delete_vm(request: web.Request) -> web.Response:
    """Stop the VM, release its address and files; answers with its final state."""
    return _vm_response(await request.app[engine_key].delete_vm(request.match_info["name"]))
