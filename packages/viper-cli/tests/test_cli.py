"""The CLI against a stand-in server on loopback: commands, output modes and errors."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import click
import pytest

from viper_cli.__main__ import main
from viper_cli.main import cli

RunCLI = Callable[..., Coroutine[Any, Any, tuple[int, str, str]]]


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found.extend(all_commands(command, (*prefix, name)))
        else:
            found.append((*prefix, name))
    return found


@pytest.mark.parametrize("path", all_commands(cli), ids=lambda p: " ".join(p) or "viper")
def test_every_command_has_help(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*path, "--help"]) == 0
    assert "Usage: viper" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert "0.1.0" in capsys.readouterr().out


async def test_create_list_get_delete(fake_server: Any, run_cli: RunCLI) -> None:
    api = fake_server.url
    code, out, _ = await run_cli(
        "--api", api, "vms", "create", "web-1", "--cpu", "2", "--label", "team=qa"
    )
    assert code == 0, out
    assert "web-1" in out
    method, path, query, body = fake_server.requests[-1]
    assert (method, path, query) == ("POST", "/api/v1/vms", {"wait": "true"})
    assert body["cpu_cores"] == 2
    assert body["labels"] == {"team": "qa"}

    code, out, _ = await run_cli("--api", api, "vms", "list")
    assert code == 0
    assert "web-1" in out
    assert "running" in out

    code, out, _ = await run_cli("--api", api, "--json", "vms", "get", "web-1")
    assert code == 0
    assert json.loads(out)["name"] == "web-1"

    code, out, _ = await run_cli("--api", api, "vms", "delete", "web-1")
    assert code == 0
    assert "deleted web-1" in out
    assert fake_server.vms == {}


async def test_server_errors_are_shown_with_their_code(fake_server: Any, run_cli: RunCLI) -> None:
    code, _, err = await run_cli("--api", fake_server.url, "vms", "get", "ghost")
    assert code == 1
    assert "no VM named 'ghost'" in err
    assert "(not_found)" in err


async def test_bad_arguments_are_refused_before_any_request(
    fake_server: Any, run_cli: RunCLI
) -> None:
    code, _, err = await run_cli("--api", fake_server.url, "vms", "create", "Bad_Name")
    assert code == 2
    assert "lowercase" in err
    code, _, err = await run_cli("--api", fake_server.url, "vms", "create", "x", "--label", "oops")
    assert code == 2
    assert fake_server.requests == []


async def test_unreachable_server(run_cli: RunCLI) -> None:
    code, _, err = await run_cli("--api", "http://127.0.0.1:9", "vms", "list")
    assert code == 1
    assert "cannot reach the Viper server" in err
