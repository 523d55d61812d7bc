"""A test double of the Cloud Hypervisor VMM: its CLI and REST API, no virtual machine.

Parses `--api-socket path=` and `--serial file=`, writes a console line, records every API
request (method, path, body) as JSON lines in `<socket>.record`, and answers the way Cloud
Hypervisor does: 200 + JSON for `vmm.ping` and `vm.info`, 204 for actions, 400 otherwise.
`vm.power-button` powers the "guest" off (the VMM exits 0) unless FAKE_CH_IGNORE_POWER=1;
`vmm.shutdown` makes it exit 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from aiohttp import web


def _opt(argv: list[str], flag: str, key: str) -> str:
    value = argv[argv.index(flag) + 1]
    for part in value.split(","):
        k, _, v = part.partition("=")
        if k == key:
            return v
    raise SystemExit(f"{flag} has no {key}=")


async def main(argv: list[str]) -> int:
    sock = Path(_opt(argv, "--api-socket", "path"))
    Path(_opt(argv, "--serial", "file")).write_text("fake guest console: booted\n")
    print("fake cloud-hypervisor v40.0 starting", flush=True)
    record = sock.with_suffix(sock.suffix + ".record")
    done = asyncio.Event()
    state = {"state": "Running"}

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.text()
        with record.open("a") as f:
            f.write(json.dumps([request.method, request.path, body]) + "\n")
        endpoint = request.path.removeprefix("/api/v1/")
        if (request.method, endpoint) == ("GET", "vmm.ping"):
            return web.json_response(
                {"build_version": "v40.0", "version": "40.0", "pid": os.getpid()}
            )
        if (request.method, endpoint) == ("GET", "vm.info"):
            return web.json_response({"config": {"cpus": {"boot_vcpus": 2}}, **state})
        if request.method == "PUT" and endpoint == "vm.power-button":
            if os.environ.get("FAKE_CH_IGNORE_POWER") != "1":
                asyncio.get_running_loop().call_later(0.2, done.set)
            return web.Response(status=204)
        if request.method == "PUT" and endpoint == "vm.shutdown":
            state["state"] = "Shutdown"
            return web.Response(status=204)
        if request.method == "PUT" and endpoint == "vmm.shutdown":
            asyncio.get_running_loop().call_later(0.1, done.set)
            return web.Response(status=204)
        return web.Response(status=400, text="Bad Request")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.UnixSite(runner, str(sock)).start()
    await done.wait()
    await runner.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
