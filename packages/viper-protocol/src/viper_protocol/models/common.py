"""Types and field validators shared by every model module.

Validators raise `InvalidField`, which carries the field name, so that the converter can point
at the offending field (`must be between 1 and 64 @ $.cpu_cores`) even though attrs runs
validators inside `__init__`, outside cattrs' per-field bookkeeping.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias, Union

import attrs

if TYPE_CHECKING:
    JSONValue: TypeAlias = (
        str | int | float | bool | list["JSONValue"] | dict[str, "JSONValue"] | None
    )
else:
    # Not recursive at run time: typing cannot resolve a recursive alias across modules, and
    # the converter checks JSON values with its own hook anyway.
    JSONValue = Union[str, int, float, bool, list[object], dict[str, object], None]  # noqa: UP007
JSONObject: TypeAlias = dict[str, JSONValue]

# attrs types validators by the field's type; ours check several types, so they take Any.
Validator: TypeAlias = Callable[[Any, "attrs.Attribute[Any]", Any], None]

DEFAULT_TIMEOUT_MS = 30_000
MAX_TIMEOUT_MS = 600_000


class InvalidField(ValueError):
    """A field holds a value of the right type that breaks a rule of the model."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{message} ({field})")
        self.field = field
        self.message = message


def int_range(low: int, high: int) -> Validator:
    """Validator: an int (or None, when the field is optional) within [low, high]."""

    def check(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
        if value is None:
            return
        assert isinstance(value, int | float)
        if not low <= value <= high:
            raise InvalidField(attr.name, f"must be between {low} and {high}")

    return check


def float_range(low: float, high: float) -> Validator:
    """Validator: a number within [low, high]."""
    return int_range(low, high)  # type: ignore[arg-type]


def str_length(low: int, high: int) -> Validator:
    """Validator: a string whose length is within [low, high]."""

    def check(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
        if value is None:
            return
        assert isinstance(value, str)
        if not low <= len(value) <= high:
            if low == 1 and len(value) == 0:
                raise InvalidField(attr.name, "must not be empty")
            raise InvalidField(attr.name, f"length must be between {low} and {high}")

    return check


def matches(pattern: str, description: str) -> Validator:
    """Validator: a string matching `pattern` fully; the error says `description`."""
    compiled = re.compile(pattern)

    def check(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
        if value is None:
            return
        assert isinstance(value, str)
        if not compiled.fullmatch(value):
            raise InvalidField(attr.name, description)

    return check


LABEL_KEY = re.compile(r"[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?")
MAX_LABELS = 64


def labels(_inst: object, attr: attrs.Attribute[Any], value: object) -> None:
    """Validator: at most 64 labels, keys like `team` or `app.kubernetes.io/name`, short values."""
    assert isinstance(value, Mapping)
    if len(value) > MAX_LABELS:
        raise InvalidField(attr.name, f"at most {MAX_LABELS} labels are allowed")
    for key, val in value.items():
        if not LABEL_KEY.fullmatch(key):
            raise InvalidField(
                attr.name,
                f"label key {key!r} must be 1-63 characters of a-z, 0-9, '.', '_', '/', '-',"
                " starting and ending with a letter or digit",
            )
        if len(val) > 256:
            raise InvalidField(attr.name, f"label {key!r} value is longer than 256 characters")


def timeout_ms() -> int:
    """The `timeout_ms` field every agent action takes: 1 ms to 10 minutes, 30 s by default."""
    return attrs.field(default=DEFAULT_TIMEOUT_MS, validator=int_range(1, MAX_TIMEOUT_MS))
