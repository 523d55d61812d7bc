"""The shell's loop: prompt, run a command, print lifecycle events above the prompt.

Each line goes through the same click group as `viper` itself (`cli.main(...,
standalone_mode=False)`); the coroutine a command returns is awaited in the shell's running
loop, so no command runs `asyncio.run` and none exists twice. A background task follows the
server's event stream and prints each event above the prompt (`patch_stdout`); it is
cancelled when the shell ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import shlex
from pathlib import Path

import click
from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.output import Output
from prompt_toolkit.patch_stdout import patch_stdout

from viper_cli.main import ClientContext, cli
from viper_cli.shell.completer import ShellCompleter
from viper_protocol.converter import converter
from viper_protocol.errors import ViperError
from viper_protocol.models.events import Event, UnknownEvent
from viper_protocol.models.vms import VMList

logger = logging.getLogger(__name__)

HELP = """Commands are those of `viper` without the word viper, e.g.:
  vms list | vms create NAME | vms get NAME | vms delete NAME
  browsers navigate NAME URL | browsers screenshot NAME -o FILE | browsers proxy NAME
  system | help | exit
Tab completes commands and VM names; Ctrl-P opens the command palette; Ctrl-D exits."""


class Shell:
    """One interactive session against one server."""

    def __init__(
        self,
        ctx: ClientContext,
        *,
        history_path: Path | None = None,
        input: Input | None = None,
        output: Output | None = None,
        print_above_prompt: bool = True,
    ) -> None:
        self.ctx = ctx
        self.print_above_prompt = print_above_prompt
        self.completer = ShellCompleter(cli)
        self.status: dict[str, str] = {}
        self.events_seen = 0
        self.connected = False
        history: History = InMemoryHistory()
        if history_path is not None:
            history_path.parent.mkdir(parents=True, exist_ok=True)
            history = FileHistory(str(history_path))
        self.session: PromptSession[str] = PromptSession(
            "viper> ",
            history=history,
            completer=self.completer,
            complete_while_typing=False,
            bottom_toolbar=self.toolbar,
            key_bindings=self._keys(),
            input=input,
            output=output,
        )

    def _keys(self) -> KeyBindings:
        keys = KeyBindings()

        @keys.add("c-p")
        def palette(event: KeyPressEvent) -> None:
            """Command palette: open the completion menu with every command."""
            event.current_buffer.start_completion(select_first=False)

        return keys

    def toolbar(self) -> str:
        """Bottom line: server, VM counts by status, events seen."""
        counts: dict[str, int] = {}
        for status in self.status.values():
            counts[status] = counts.get(status, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no VMs"
        link = "live" if self.connected else "offline"
        return f" {self.ctx.api_base} [{link}] | {summary} | events: {self.events_seen}"

    async def refresh(self) -> None:
        """Reload VM names and statuses (for completion and the toolbar)."""
        try:
            async with self.ctx.client(timeout=10) as client:
                listing = await client.get("/api/v1/vms", VMList)
        except ViperError:
            return
        self.status = {vm.name: str(vm.status) for vm in listing.vms}
        self.completer.vm_names = sorted(self.status)

    async def follow_events(self) -> None:
        """Bottom half: print lifecycle events above the prompt; reconnect when the stream ends."""
        while True:
            try:
                async with self.ctx.client(timeout=None) as client:
                    self.connected = True
                    async for _, _, data in client.sse("/api/v1/events"):
                        event: Event | UnknownEvent = converter.structure(
                            json.loads(data),
                            Event,  # type: ignore[arg-type]
                        )
                        self.events_seen += 1
                        if event.status is not None:
                            self.status[event.vm] = str(event.status)
                        if str(event.type) == "VM_DELETED":
                            self.status.pop(event.vm, None)
                        self.completer.vm_names = sorted(self.status)
                        if str(event.type) != "VM_LOG":
                            print(f"[event] {event.type} {event.vm} {event.message}".rstrip())
            except (ViperError, OSError, ValueError) as exc:
                logger.debug("event stream ended: %s", exc)
            self.connected = False
            await asyncio.sleep(2)

    async def run_line(self, line: str) -> bool:
        """Run one command line; False when the shell should end."""
        try:
            args = shlex.split(line)
        except ValueError as exc:
            print(f"Error: {exc}")
            return True
        if not args:
            return True
        if args[0] in ("exit", "quit"):
            return False
        if args[0] == "help":
            print(HELP)
            return True
        if args[0] == "viper":
            args = args[1:]
        try:
            rv = cli.main(args=args, prog_name="viper", standalone_mode=False, obj=self.ctx)
            if inspect.iscoroutine(rv):
                await rv
        except ViperError as exc:
            print(f"Error: {exc.message} ({exc.code})")
        except click.exceptions.Exit:
            pass
        except click.ClickException as exc:
            print(f"Error: {exc.format_message()}")
        except click.Abort:
            print("Aborted.")
        await self.refresh()
        return True

    async def run(self) -> None:
        """Prompt until exit or Ctrl-D."""
        await self.refresh()
        patched = patch_stdout() if self.print_above_prompt else contextlib.nullcontext()
        with patched:
            follower = asyncio.create_task(self.follow_events(), name="shell-events")
            try:
                while True:
                    try:
                        line = await self.session.prompt_async()
                    except KeyboardInterrupt:
                        continue
                    except EOFError:
                        break
                    if not await self.run_line(line):
                        break
            finally:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
