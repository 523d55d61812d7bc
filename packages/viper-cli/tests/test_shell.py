"""The interactive shell, fed keystrokes through a pipe, against the stand-in server."""

from __future__ import annotations

import asyncio
from typing import Any

from prompt_toolkit.application import create_app_session
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from viper_cli.main import ClientContext, cli
from viper_cli.shell.app import Shell
from viper_cli.shell.completer import ShellCompleter


def complete(completer: ShellCompleter, text: str) -> list[str]:
    return [c.text for c in completer.get_completions(Document(text), CompleteEvent())]


def test_completion_of_commands_options_and_vm_names() -> None:
    completer = ShellCompleter(cli)
    completer.vm_names = ["alpha", "beta"]
    assert {"vms", "browsers", "system", "exit"} <= set(complete(completer, ""))
    assert complete(completer, "vms cr") == ["create"]
    assert complete(completer, "vms get ") == ["alpha", "beta"]
    assert complete(completer, "browsers navigate b") == ["beta"]
    assert "--cpu" in complete(completer, "vms create x --c")


async def test_commands_run_in_the_shell_loop_and_events_show(
    fake_server: Any, capsys: Any
) -> None:
    ctx = ClientContext(api_base=fake_server.url, api_key=None, json_output=False)
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        shell = Shell(ctx, input=pipe, output=DummyOutput(), print_above_prompt=False)
        task = asyncio.create_task(shell.run())
        for _ in range(100):
            if fake_server.subscribers:
                break
            await asyncio.sleep(0.05)
        pipe.send_text("vms create alpha --no-wait\r")
        for _ in range(100):
            if shell.events_seen:
                break
            await asyncio.sleep(0.05)
        pipe.send_text("vms list\r")
        pipe.send_text("vms get ghost\r")
        pipe.send_text("exit\r")
        await asyncio.wait_for(task, 20)
    methods = [(m, p) for m, p, _, _ in fake_server.requests]
    assert ("POST", "/api/v1/vms") in methods
    assert ("GET", "/api/v1/vms/ghost") in methods
    assert "alpha" in shell.status
    out = capsys.readouterr().out
    assert "no VM named 'ghost' (not_found)" in out
    assert "alpha" in out
    assert "[event] VM_CREATED alpha created" in out
