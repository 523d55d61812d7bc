"""JSON Schema (2020-12, as OpenAPI 3.1 uses it) generated from the protocol's attrs models.

The models are the single source of truth: `SchemaRegistry.ref(cls)` walks an attrs class and
every class it references, writes each once under `components/schemas`, and returns a `$ref`.
Types map as the converter reads them: datetimes and IPv4 addresses are formatted strings,
StrEnums are string enums, `X | None` allows null, `JSONValue` is any JSON value. Request
models (read with the strict converter) forbid extra properties; the `type` ClassVar of an
event class becomes a `const` property.
"""

from __future__ import annotations

import enum
import typing
from datetime import datetime
from ipaddress import IPv4Address
from types import NoneType, UnionType
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

import attrs

from viper_protocol.models.common import JSONObject, JSONValue

Schema = dict[str, Any]


def _nullable(schema: Schema) -> Schema:
    if set(schema) == {"type"} and isinstance(schema["type"], str):
        return {"type": [schema["type"], "null"]}
    if "$ref" in schema or "enum" in schema or "type" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    return schema


class SchemaRegistry:
    """Component schemas for a set of attrs classes, filled on demand."""

    def __init__(self, *, strict: frozenset[type] = frozenset()) -> None:
        self.schemas: dict[str, Schema] = {}
        self._strict = strict

    def ref(self, cls: type) -> Schema:
        """A `$ref` to `cls`'s component schema, generating it (and its parts) if needed."""
        name = cls.__name__
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder: recursion stops here
            self.schemas[name] = self._class_schema(cls)
        return {"$ref": f"#/components/schemas/{name}"}

    def one_of(self, name: str, members: typing.Sequence[type], tag: str = "type") -> Schema:
        """A named component that is exactly one of `members`, told apart by `tag`."""
        if name not in self.schemas:
            refs = [self.ref(m) for m in members]
            mapping = {
                str(getattr(m, tag)): ref["$ref"] for m, ref in zip(members, refs, strict=True)
            }
            self.schemas[name] = {
                "oneOf": refs,
                "discriminator": {"propertyName": tag, "mapping": mapping},
            }
        return {"$ref": f"#/components/schemas/{name}"}

    def _class_schema(self, cls: type) -> Schema:
        hints = get_type_hints(cls)
        properties: dict[str, Schema] = {}
        required: list[str] = []
        for field in attrs.fields(cls):
            prop = self.type_schema(hints[field.name])
            if field.default is attrs.NOTHING:
                required.append(field.name)
            elif not isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
                default = field.default
                if isinstance(default, enum.Enum):
                    default = default.value
                if default is None or isinstance(default, str | int | float | bool):
                    prop = {**prop, "default": default}
            properties[field.name] = prop
        for name, hint in hints.items():
            if get_origin(hint) is ClassVar and name not in properties:
                value = getattr(cls, name)
                if isinstance(value, enum.Enum):
                    properties[name] = {"type": "string", "const": value.value}
                    required.append(name)
        schema: Schema = {"type": "object", "properties": properties}
        if cls.__doc__:
            schema["description"] = cls.__doc__.strip().splitlines()[0]
        if required:
            schema["required"] = required
        if cls in self._strict:
            schema["additionalProperties"] = False
        return schema

    def type_schema(self, tp: Any) -> Schema:
        """The schema of one field type."""
        if tp == JSONValue or tp is Any or tp is object:
            return {}
        if tp == JSONObject:
            return {"type": "object"}
        origin = get_origin(tp)
        args = get_args(tp)
        if origin in (Union, UnionType):
            members = [a for a in args if a is not NoneType]
            inner = (
                self.type_schema(members[0])
                if len(members) == 1
                else {"anyOf": [self.type_schema(m) for m in members]}
            )
            return _nullable(inner) if NoneType in args else inner
        if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
            item = self.type_schema(args[0]) if args else {}
            return {"type": "array", "items": item}
        if origin is dict or tp is dict:
            value = self.type_schema(args[1]) if len(args) == 2 else {}
            return {"type": "object", "additionalProperties": value}
        if isinstance(tp, type):
            return self._plain_type(tp)
        raise TypeError(f"no JSON schema for {tp!r}")

    def _plain_type(self, tp: type) -> Schema:
        if issubclass(tp, enum.Enum):
            return {"type": "string", "enum": [m.value for m in tp]}
        if tp is bool:
            return {"type": "boolean"}
        if tp is int:
            return {"type": "integer"}
        if tp is float:
            return {"type": "number"}
        if tp is str:
            return {"type": "string"}
        if tp is datetime:
            return {"type": "string", "format": "date-time"}
        if tp is IPv4Address:
            return {"type": "string", "format": "ipv4"}
        if attrs.has(tp):
            return self.ref(tp)
        raise TypeError(f"no JSON schema for {tp!r}")
