"""Every protocol model survives unstructure -> JSON text -> structure, with both converters."""

from __future__ import annotations

import inspect
import json
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from viper_protocol import errors
from viper_protocol.converter import converter, strict_converter
from viper_protocol.models import browser, events, system, vms
from viper_protocol.models.events import Event, UnknownEvent
from viper_protocol.testing import MODEL_STRATEGIES

MODEL_MODULES = (vms, events, browser, system, errors)


def all_models() -> list[type[Any]]:
    found = []
    for module in MODEL_MODULES:
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if (
                obj.__module__ == module.__name__
                and attrs.has(obj)
                and not obj.__name__.startswith("_")
            ):
                found.append(obj)
    return found


def test_every_model_has_a_strategy() -> None:
    missing = [m.__name__ for m in all_models() if m not in MODEL_STRATEGIES]
    assert missing == []


@pytest.mark.parametrize("model", all_models(), ids=lambda m: m.__name__)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_round_trip(model: type[Any], data: st.DataObject) -> None:
    obj = data.draw(MODEL_STRATEGIES[model])
    wire = json.loads(json.dumps(converter.unstructure(obj)))
    assert converter.structure(wire, model) == obj
    if model is not UnknownEvent:
        assert strict_converter.structure(wire, model) == obj


@pytest.mark.parametrize("cls", list(events.EVENT_CLASSES.values()), ids=lambda c: c.__name__)
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_event_union_round_trip_keeps_the_tag(cls: type[Any], data: st.DataObject) -> None:
    event = data.draw(MODEL_STRATEGIES[cls])
    wire = json.loads(json.dumps(converter.unstructure(event, unstructure_as=Event)))
    assert wire["type"] == cls.type.value
    assert converter.structure(wire, Event) == event  # type: ignore[arg-type]
    assert strict_converter.structure(wire, Event) == event  # type: ignore[arg-type]


def test_unknown_event_type_is_tolerated_by_clients_only() -> None:
    wire = {"id": 7, "type": "VM_TELEPORTED", "vm": "a", "timestamp": "2026-01-01T00:00:00+00:00"}
    event: object = converter.structure(wire, Event)  # type: ignore[arg-type]
    assert isinstance(event, UnknownEvent)
    assert event.type == "VM_TELEPORTED"
    assert event.id == 7
    with pytest.raises(Exception):  # noqa: B017, PT011 - any structuring error will do
        strict_converter.structure(wire, Event)  # type: ignore[arg-type]


def test_clients_ignore_fields_a_newer_server_adds() -> None:
    wire = {"status": "ok", "version": "9.9", "new_field": {"x": 1}}
    assert converter.structure(wire, system.Health) == system.Health(version="9.9")
    with pytest.raises(Exception):  # noqa: B017, PT011 - servers reject what they do not know
        strict_converter.structure(wire, system.Health)
