"""Completion for the shell: command words from the click tree, VM names from the server."""

from __future__ import annotations

from collections.abc import Iterable

import click
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

# Commands whose first argument is a VM name.
TAKES_VM = {
    ("vms", "get"),
    ("vms", "delete"),
    ("vms", "logs"),
    ("browsers", "navigate"),
    ("browsers", "screenshot"),
    ("browsers", "dom"),
    ("browsers", "eval"),
    ("browsers", "proxy"),
}
SHELL_WORDS = ("help", "exit", "quit")


class ShellCompleter(Completer):
    """Completes command paths, their options, and VM names where a command takes one."""

    def __init__(self, root: click.Group) -> None:
        self.root = root
        self.vm_names: list[str] = []

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        words = document.text_before_cursor.split()
        if document.text_before_cursor.endswith(" ") or not words:
            words.append("")
        *done, current = words
        command: click.Command = self.root
        path: list[str] = []
        for word in done:
            if isinstance(command, click.Group) and word in command.commands:
                command = command.commands[word]
                path.append(word)
        candidates: list[str] = []
        if isinstance(command, click.Group):
            candidates = sorted(command.commands)
            if not path:
                candidates += SHELL_WORDS
        else:
            positional = [w for w in done[len(path) :] if not w.startswith("-")]
            if tuple(path) in TAKES_VM and not positional:
                candidates = list(self.vm_names)
            if current.startswith("-") or not candidates:
                candidates += [
                    opt
                    for param in command.params
                    for opt in getattr(param, "opts", [])
                    if opt.startswith("-")
                ]
        for candidate in candidates:
            if candidate.startswith(current):
                yield Completion(candidate, start_position=-len(current))
