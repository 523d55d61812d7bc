"""The one converter factory: strict JSON (un)structuring of every protocol model.

cattrs coerces silently by default (`"3"` becomes 3, `False` becomes 0, a string becomes a
list of characters). Viper's converter does not: each primitive, enum, list, mapping and class
hook checks the JSON type first. Servers and agents read input with `forbid_extra_keys=True`
(a typo is a 422); clients read output with `False` (a newer server adding a field breaks no
older CLI). `format_validation_error` turns a failed structure into lines like
`expected int @ $.cpu_cores`.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from ipaddress import IPv4Address
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import attrs
from cattrs import ForbiddenExtraKeysError
from cattrs.cols import list_structure_factory, mapping_structure_factory
from cattrs.errors import ClassValidationError, IterableValidationError, IterableValidationNote
from cattrs.gen import make_dict_structure_fn
from cattrs.preconf.json import JsonConverter
from cattrs.preconf.json import make_converter as make_json_converter
from cattrs.strategies import configure_tagged_union

from viper_protocol.models.common import InvalidField, JSONObject, JSONValue
from viper_protocol.models.events import Event, UnknownEvent

T = TypeVar("T")

__all__ = [
    "WireTypeError",
    "configure_converter",
    "converter",
    "format_validation_error",
    "make_converter",
    "strict_converter",
    "structure_query",
]


class WireTypeError(TypeError):
    """A JSON value of the wrong type (`"3"` where an int belongs)."""


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _structure_int(value: object, _: type) -> int:
    if type(value) is not int:
        raise WireTypeError(f"expected int, got {_json_type(value)}")
    return value


def _structure_float(value: object, _: type) -> float:
    if type(value) not in (int, float):
        raise WireTypeError(f"expected number, got {_json_type(value)}")
    assert isinstance(value, int | float)
    if not math.isfinite(value):
        raise InvalidField("", "must be a finite number")
    return float(value)


def _structure_str(value: object, cls: type) -> str:
    # Registered for `str`, which singledispatch also picks for every StrEnum subclass.
    if cls is not str and issubclass(cls, enum.Enum):
        return _structure_enum(value, cls)  # type: ignore[return-value]
    if type(value) is not str:
        raise WireTypeError(f"expected string, got {_json_type(value)}")
    return value


def _structure_bool(value: object, _: type) -> bool:
    if type(value) is not bool:
        raise WireTypeError(f"expected boolean, got {_json_type(value)}")
    return value


def _structure_datetime(value: object, _: type) -> datetime:
    if type(value) is not str:
        raise WireTypeError(f"expected ISO 8601 timestamp string, got {_json_type(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise WireTypeError(f"expected ISO 8601 timestamp, got {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _structure_ipv4(value: object, _: type) -> IPv4Address:
    if type(value) is not str:
        raise WireTypeError(f"expected IPv4 address string, got {_json_type(value)}")
    try:
        return IPv4Address(value)
    except ValueError:
        raise WireTypeError(f"expected IPv4 address, got {value!r}") from None


def _structure_enum(value: object, cls: type[enum.Enum]) -> enum.Enum:
    allowed = [str(m.value) for m in cls]
    if type(value) is not str or value not in allowed:
        raise WireTypeError(f"expected one of {', '.join(allowed)}")
    return cls(value)


def _check_json(value: object, depth: int = 0) -> None:
    if depth > 64:
        raise WireTypeError("JSON nested too deeply")
    if value is None or type(value) in (str, int, bool):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise WireTypeError("expected a finite number")
        return
    if isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if type(key) is not str:
                raise WireTypeError("object keys must be strings")
            _check_json(item, depth + 1)
        return
    raise WireTypeError(f"expected a JSON value, got {_json_type(value)}")


def _structure_json_value(value: object, _: object) -> JSONValue:
    _check_json(value)
    return value  # type: ignore[return-value]


def _structure_json_object(value: object, _: object) -> JSONObject:
    if not isinstance(value, dict):
        raise WireTypeError(f"expected object, got {_json_type(value)}")
    _check_json(value)
    return dict(value)


def _is_optional(t: object) -> bool:
    args = get_args(t)
    return (
        get_origin(t) in (Union, UnionType)
        and len(args) == 2
        and type(None) in args
        and not _is_json_value(t)
    )


def _is_json_value(t: object) -> bool:
    return t == JSONValue


def _is_json_object(t: object) -> bool:
    return t == JSONObject


def _is_enum(t: object) -> bool:
    return isinstance(t, type) and issubclass(t, enum.Enum)


def _is_list(t: object) -> bool:
    return get_origin(t) is list


def _is_dict(t: object) -> bool:
    return get_origin(t) is dict and not _is_json_object(t)


def _is_attrs(t: object) -> bool:
    return isinstance(t, type) and attrs.has(t)


def configure_converter(conv: JsonConverter) -> None:
    """Install Viper's strict hooks on a cattrs JSON converter."""
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook(datetime, _structure_datetime)
    conv.register_unstructure_hook(datetime, lambda dt: dt.isoformat())
    conv.register_structure_hook(IPv4Address, _structure_ipv4)
    conv.register_unstructure_hook(IPv4Address, str)
    conv.register_structure_hook_func(_is_enum, _structure_enum)
    conv.register_structure_hook_func(_is_json_value, _structure_json_value)
    conv.register_unstructure_hook_func(_is_json_value, lambda v: v)
    conv.register_structure_hook_func(_is_json_object, _structure_json_object)
    conv.register_unstructure_hook_func(_is_json_object, lambda v: dict(v))

    def list_factory(t: Any, c: Any) -> Callable[[object, Any], list[Any]]:
        inner = list_structure_factory(t, c)

        def structure_list(value: object, t: Any) -> list[Any]:
            if not isinstance(value, list):
                raise WireTypeError(f"expected array, got {_json_type(value)}")
            return inner(value, t)  # type: ignore[no-any-return]

        return structure_list

    def dict_factory(t: Any, c: Any) -> Callable[[object, Any], dict[Any, Any]]:
        inner = mapping_structure_factory(t, c)

        def structure_dict(value: object, t: Any) -> dict[Any, Any]:
            if not isinstance(value, dict):
                raise WireTypeError(f"expected object, got {_json_type(value)}")
            return inner(value, t)  # type: ignore[no-any-return]

        return structure_dict

    def attrs_factory(t: Any, c: Any) -> Callable[[object, Any], Any]:
        inner = make_dict_structure_fn(
            t,
            c,
            _cattrs_forbid_extra_keys=c.forbid_extra_keys,
            _cattrs_detailed_validation=True,
        )

        def structure_class(value: object, t: Any) -> Any:
            if not isinstance(value, dict):
                raise WireTypeError(f"expected object, got {_json_type(value)}")
            return inner(value, t)

        return structure_class

    def optional_factory(t: Any, c: Any) -> Callable[[object, Any], Any]:
        # cattrs' JSON preconf passes `str | None` (and str enums) straight through; check them.
        (inner_type,) = [a for a in get_args(t) if a is not type(None)]
        inner = c.get_structure_hook(inner_type)

        def structure_optional(value: object, _: Any) -> Any:
            return None if value is None else inner(value, inner_type)

        return structure_optional

    conv.register_structure_hook_factory(_is_optional, optional_factory)
    conv.register_structure_hook_factory(_is_list, list_factory)
    conv.register_structure_hook_factory(_is_dict, dict_factory)
    conv.register_structure_hook_factory(_is_attrs, attrs_factory)


def _event_tag(cls: type) -> str:
    return str(cls.type)  # type: ignore[attr-defined]


def make_converter(*, forbid_extra_keys: bool = False) -> JsonConverter:
    """A converter for Viper's wire format.

    Args:
        forbid_extra_keys: reject unknown fields (servers and agents reading input) instead of
            ignoring them (clients reading output).
    """
    conv = make_json_converter(forbid_extra_keys=forbid_extra_keys, detailed_validation=True)
    configure_converter(conv)
    configure_tagged_union(
        Event,
        conv,
        tag_name="type",
        tag_generator=_event_tag,
        default=attrs.NOTHING if forbid_extra_keys else UnknownEvent,
    )
    return conv


def _describe(exc: BaseException) -> str:
    if isinstance(exc, WireTypeError):
        return str(exc)
    if isinstance(exc, InvalidField):
        return exc.message
    if isinstance(exc, ForbiddenExtraKeysError):
        return f"unknown field(s): {', '.join(sorted(exc.extra_fields))}"
    if isinstance(exc, KeyError):
        return "required field missing"
    return str(exc) or type(exc).__name__


def format_validation_error(exc: BaseException) -> list[str]:
    """Readable lines, `<what is wrong> @ <JSON path>`, for a failed structure."""
    return _leaves(exc, "$")


def _leaves(exc: BaseException, path: str) -> list[str]:
    """Like cattrs' `transform_error`, but puts an `InvalidField`'s own field on the path."""
    out: list[str] = []
    if isinstance(exc, IterableValidationError | ClassValidationError):
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            if isinstance(note, IterableValidationNote):
                sub_path = f"{path}[{note.index!r}]"
            else:
                sub_path = f"{path}.{note.name}"
            out.extend(_leaves(sub, sub_path))
        for sub in without:
            out.extend(_leaves(sub, path))
    elif isinstance(exc, InvalidField) and exc.field:
        out.append(f"{exc.message} @ {path}.{exc.field}")
    else:
        out.append(f"{_describe(exc)} @ {path}")
    return out


def structure_query(conv: JsonConverter, query: Mapping[str, str], cls: type[T]) -> T:
    """Structure a model from URL query parameters, converting each by its field type.

    `"true"/"false"/"1"/"0"` are booleans, digits are ints, anything else stays a string; the
    strict hooks then check the result as they would a JSON body.

    Raises:
        cattrs.BaseValidationError: a parameter is of the wrong type or breaks a rule.
    """
    fields = get_type_hints(cls)
    raw: dict[str, object] = {}
    for key, value in query.items():
        kind = fields.get(key)
        raw[key] = _query_value(value, kind) if kind is not None else value
    return conv.structure(raw, cls)


def _query_value(value: str, kind: object) -> object:
    types = [a for a in get_args(kind) if a is not type(None)] or [kind]
    base = types[0]
    if base is bool:
        lowered = value.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        return value
    if base is int:
        try:
            return int(value)
        except ValueError:
            return value
    if base is float:
        try:
            return float(value)
        except ValueError:
            return value
    return value


def dumps(conv: JsonConverter, obj: object, unstructure_as: Any = None) -> str:
    """Compact JSON text of a model."""
    return json.dumps(conv.unstructure(obj, unstructure_as=unstructure_as), separators=(",", ":"))


converter = make_converter(forbid_extra_keys=False)
"""The tolerant converter for reading output (clients) and for writing anything."""

strict_converter = make_converter(forbid_extra_keys=True)
"""The strict converter for reading input (server and agent request bodies)."""
