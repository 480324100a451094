"""A fast path for push-list layouts (IDIS, Landis+Gyr, Iskraemeco), sans-IO.

Such a push repeats its push object list, byte for byte, in every push: a
meter that sends 15 values spends most of its bytes (and most of a parser's
time) describing them. A :class:`PushListCache` (one per meter) remembers the
lists it has seen, as bytes, with a plan that maps each value to its reading;
a push that starts with a known list is decoded by parsing only its values.
The plan comes from decoder.mapping, so the result is the one map_body gives
(tests/decoder/test_pushlist.py holds the two paths to that).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from meterpipe.common.errors import TruncatedError
from meterpipe.common.schema import Reading
from meterpipe.decoder import models
from meterpipe.decoder.axdr import parse_data
from meterpipe.decoder.mapping import (
    CLASS_PUSH_SETUP,
    Entry,
    Mapped,
    code_info,
    is_clock,
    is_push_list,
    make_reading,
    meter_id_of,
    text_of,
)

MAX_LAYOUTS = 4  # a meter has one push list; firmware updates may bring another


@dataclass(frozen=True, slots=True)
class _Slot:
    index: int  # position of the value in the body
    obis: str
    name: str
    unit: str | None
    scaler: int
    key: bytes  # first five OBIS bytes, for the meter id


@dataclass(frozen=True, slots=True)
class _Plan:
    definitions: bytes  # the A-XDR bytes of the push object list
    members: int  # members of the body structure, the list included
    slots: tuple[_Slot, ...]
    clock: int | None  # index of the clock's value: the push time
    model: str | None

    def apply(self, values: Sequence[Any]) -> Mapped:
        readings: list[Reading] = []
        by_code: dict[bytes, Reading] = {}
        for slot in self.slots:
            reading = make_reading(slot.obis, slot.name, values[slot.index], slot.scaler, slot.unit)
            if reading is not None:
                readings.append(reading)
                by_code.setdefault(slot.key, reading)
        time = text_of(values[self.clock]) if self.clock is not None else None
        return Mapped(tuple(readings), meter_id_of(by_code), time, self.model)


def _plan(definitions: bytes, body: list[Any], model: str | None) -> _Plan | None:
    """The plan for a body whose first member is its push object list, or None
    when the list asks for what only the general path does (scalers pushed as
    attribute 3)."""
    registers: list[tuple[int, bytes]] = []
    clock = None
    entries = []
    for index, (class_id, code, attribute, _) in enumerate(body[0]):
        if attribute == 3:
            return None
        if class_id == CLASS_PUSH_SETUP or attribute != 2:
            continue
        entries.append(Entry(code, body[index]))
        if is_clock(code):
            clock = clock if clock is not None else index
        else:
            registers.append((index, code))
    resolved = model or models.detect_model((entry.code, entry.value) for entry in entries)
    slots = []
    for index, code in registers:
        obis, name, unit = code_info(code)
        slots.append(_Slot(index, obis, name, unit, models.default_scaler(resolved, code), code[:5]))
    return _Plan(definitions, len(body), tuple(slots), clock, resolved)


class PushListCache:
    def __init__(self) -> None:
        self._plans: list[_Plan] = []

    def __len__(self) -> int:
        return len(self._plans)

    def decode(self, apdu: bytes, pos: int) -> Mapped | None:
        """Map the body at ``apdu[pos:]`` if it starts with a known push object list."""
        if apdu[pos : pos + 1] != b"\x02" or pos + 2 >= len(apdu):
            return None
        for plan in self._plans:
            if apdu[pos + 1] == plan.members and apdu.startswith(plan.definitions, pos + 2):
                p = pos + 2 + len(plan.definitions)
                values: list[Any] = [None]
                for _ in range(plan.members - 1):
                    value, p = parse_data(apdu, p, 1)
                    values.append(value)
                if p != len(apdu):
                    raise TruncatedError(f"{len(apdu) - p} bytes after the notification body", data=apdu[p:])
                return plan.apply(values)
        return None

    def learn(self, apdu: bytes, pos: int, body: Any, model: str | None) -> None:
        """Remember the push object list of a body map_body read as a push-list layout."""
        if not (is_push_list(body) and apdu[pos : pos + 1] == b"\x02" and apdu[pos + 1] < 0x80):
            return
        _, end = parse_data(apdu, pos + 2, 1)
        plan = _plan(apdu[pos + 2 : end], body, model)
        if plan is not None:
            self._plans = [plan, *self._plans[: MAX_LAYOUTS - 1]]
