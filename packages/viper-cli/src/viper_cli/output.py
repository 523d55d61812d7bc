"""Human and JSON output: rich tables for people, plain JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from viper_protocol.converter import converter


def print_json(obj: object) -> None:
    """Print a model (or plain data) as indented JSON."""
    print(json.dumps(converter.unstructure(obj), indent=2, sort_keys=True))


def print_table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print rows under column headers."""
    table = Table(*columns, box=None, header_style="bold", pad_edge=False)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    Console().print(table)


def print_fields(pairs: Sequence[tuple[str, object]]) -> None:
    """Print `key: value` lines, aligned."""
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        print(f"{key.ljust(width)}  {'' if value is None else value}")
