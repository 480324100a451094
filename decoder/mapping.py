"""Turn a decoded data-notification body into named readings with units.

Sans-IO and stateless (decoder.mapper keeps what one meter's pushes have
taught it). Every layout comes down to (rule, value) pairs, and every push to
one :func:`assemble` of them::

    body --layout--> (Rule, value) pairs --assemble--> Mapped (readings, meter id, time)

A :class:`Rule` is what one OBIS code becomes (name, unit, decimal exponent,
or the push time for a clock); :func:`rule_for` is the only place that decides
it. Layouts:

* push list (IDIS, Landis+Gyr, Iskraemeco): the body's first member is the
  push object list (class, OBIS, attribute, data index per object); members
  follow one per entry. Its :class:`Plan` (member index -> rule) depends on the
  list alone, so decoder.mapper keeps it and, when the same list comes again,
  parses only the values and applies the same plan. L+G and Iskraemeco send
  attribute 2 only, so scalers come from the per-model table in decoder.models;
  a {scaler, unit} pushed as attribute 3 is read from its member each push.
* OBIS-tagged (Aidon, Kaifa and Sagemcom in Austria, Kamstrup): an OBIS
  octet-string before each value, optionally followed by {scaler, unit}.
  Found by a walk over the flattened body, so flat lists and nested
  structures read alike.
* value-only (Kaifa in Norway, L+G without a push list): positional tables in
  decoder.models, chosen by the list identifier or the model hint.

Unknown OBIS codes pass through with a name made from the code.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from meterpipe.common.errors import UnsupportedError
from meterpipe.common.values import Reading, split_decimal
from meterpipe.decoder import models
from meterpipe.decoder.apdu import cosem_datetime
from meterpipe.decoder.axdr import DateBytes, DateTimeBytes, TimeBytes
from meterpipe.decoder.obis import UNITS, default_unit, looks_like_obis, obis_text, reading_name

CLOCK = bytes((0, 0, 1, 0, 0, 255))
METER_NUMBER = bytes((0, 0, 96, 1, 0, 255))
LIST_ID = bytes((1, 1, 0, 2, 129, 255))
CLASS_DATA, CLASS_REGISTER, CLASS_EXT_REGISTER, CLASS_CLOCK, CLASS_PUSH_SETUP = 1, 3, 4, 8, 40
METER_ID_CODES = ((0, 96, 1, 0), (1, 0, 0, 5), (0, 42, 0, 0), (1, 96, 1, 0))

# (OBIS code, value, pushed scaler, pushed unit) of one value before its rule is known
Entry: TypeAlias = tuple[bytes, Any, int | None, int | None]


@dataclass(frozen=True, slots=True)
class Mapped:
    readings: tuple[Reading, ...]
    meter_id: str | None
    time: str | None
    model: str | None


@dataclass(frozen=True, slots=True)
class Rule:
    """What the value of one OBIS code becomes: a reading, or (a clock) the push time."""

    obis: str
    name: str
    unit: str | None
    scaler: int  # decimal exponent added to the value's own
    key: bytes  # the code's first five bytes, to find the meter id
    clock: bool


def is_clock(code: bytes) -> bool:
    return code[0] == 0 and code[2:5] == CLOCK[2:5]


@functools.lru_cache(maxsize=4096)
def rule_for(code: bytes, model: str | None, scaler: int | None = None, unit: int | None = None) -> Rule:
    """The rule for a code: with the scaler (and unit) the push sent, or else the
    model's scaler and the code's usual unit (the same few codes recur)."""
    if scaler is None:
        exponent, unit_text = models.default_scaler(model, code), default_unit(code)
    else:
        exponent, unit_text = scaler, (UNITS.get(unit) if unit is not None else default_unit(code))
    return Rule(obis_text(code), reading_name(code), unit_text, exponent, bytes(code[:5]), is_clock(code))


def text_of(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, DateTimeBytes) or (isinstance(value, bytes) and len(value) == 12 and value[:1] in (b"\x07", b"\x08")):
        return cosem_datetime(value)
    if isinstance(value, (DateBytes, TimeBytes)):
        return value.hex()
    if isinstance(value, bytes):
        if value and all(32 <= b < 127 for b in value):
            return value.decode("ascii")
        return value.hex()
    return None


def make_reading(obis: str, name: str, value: Any, scaler: int, unit: str | None) -> Reading | None:
    """A Reading from a decoded value: numbers scaled exactly, identifiers as text."""
    if value is None or isinstance(value, list):
        return None
    if isinstance(value, (int, float)):
        mantissa, exponent = (value, 0) if type(value) is int else split_decimal(value)
        return Reading(obis, name, mantissa, exponent + scaler, unit)
    text = text_of(value)
    if text is None:
        return None
    return Reading(obis, name, text, 0, None)


def assemble(pairs: Iterable[tuple[Rule, Any]], time: str | None, model: str | None) -> Mapped:
    """Readings, meter id and time of a push from its (rule, value) pairs, in order.

    A clock (0-b:1.0.0, any channel) gives the push time when none is known yet.
    """
    readings: list[Reading] = []
    by_code: dict[bytes, Reading] = {}
    for rule, value in pairs:
        if rule.clock:
            time = time or text_of(value)
            continue
        if type(value) is int:  # most values: make_reading's first case, without the call
            reading: Reading | None = Reading(rule.obis, rule.name, value, rule.scaler, rule.unit)
        else:
            reading = make_reading(rule.obis, rule.name, value, rule.scaler, rule.unit)
        if reading is not None:
            readings.append(reading)
            by_code.setdefault(rule.key, reading)
    return Mapped(tuple(readings), meter_id_of(by_code), time, model)


def meter_id_of(by_code: Mapping[bytes, Reading]) -> str | None:
    """The meter's identifier among the readings (keyed by the first five OBIS bytes)."""
    for a, c, d, e in METER_ID_CODES:
        for b in (0, 1):
            found = by_code.get(bytes((a, b, c, d, e)))
            if found is not None and isinstance(found.value, str):
                return found.value
    return None


# --- push lists -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Slot:
    index: int  # the body member holding the value
    code: bytes
    rule: Rule  # without a pushed scaler
    scalers: tuple[int, ...]  # members pushing its {scaler, unit} (attribute 3), last first


@dataclass(frozen=True, slots=True)
class Plan:
    """The layout of one push object list: which body member becomes which reading.

    Member 0 is the list itself; no slot reads it (it would give no reading,
    time or scaler), so a caller that parsed only the values may leave it None.
    """

    members: int  # members of the body structure, the list included
    slots: tuple[Slot, ...]
    model: str | None  # the model hint, or the model the first push identified
    pushes_scalers: bool  # some slot reads a pushed {scaler, unit}

    def apply(self, values: Sequence[Any]) -> Mapped:
        if not self.pushes_scalers:
            return assemble([(slot.rule, values[slot.index]) for slot in self.slots], None, self.model)
        return assemble([(self._rule(slot, values), values[slot.index]) for slot in self.slots], None, self.model)

    def _rule(self, slot: Slot, values: Sequence[Any]) -> Rule:
        for index in slot.scalers:
            pushed = values[index]
            if _is_scaler_unit(pushed):
                return rule_for(slot.code, self.model, pushed[0], pushed[1])
        return slot.rule


def _is_capture_definition(item: Any) -> bool:
    return (
        isinstance(item, list)
        and len(item) == 4
        and isinstance(item[0], int)
        and isinstance(item[1], bytes)
        and len(item[1]) == 6
    )


def is_push_list(body: Any) -> bool:
    """Does the body start with its push object list, one definition per member?"""
    return (
        isinstance(body, list)
        and bool(body)
        and isinstance(body[0], list)
        and len(body[0]) == len(body)
        and all(_is_capture_definition(d) for d in body[0])
    )


def push_list_plan(body: Any, model: str | None) -> Plan | None:
    """The plan of a body that starts with its push object list (else None).

    Without a model hint the model comes from this body's identifiers, and the
    plan keeps it for the pushes that follow.
    """
    if not is_push_list(body):
        return None
    values: list[tuple[int, bytes]] = []
    pushed: dict[bytes, list[int]] = {}
    for index, (class_id, code, attribute, _) in enumerate(body[0]):
        if index == 0:
            continue
        if attribute == 3 and class_id in (CLASS_REGISTER, CLASS_EXT_REGISTER):
            pushed.setdefault(code, []).insert(0, index)
        elif attribute == 2 and class_id != CLASS_PUSH_SETUP:
            values.append((index, code))
    resolved = model or models.detect_model((code, body[index]) for index, code in values)
    slots = tuple(Slot(index, code, rule_for(code, resolved), tuple(pushed.get(code, ()))) for index, code in values)
    return Plan(len(body), slots, resolved, any(slot.scalers for slot in slots))


# --- OBIS-tagged and value-only bodies ----------------------------------------------


class _ScalerUnit:
    __slots__ = ("scaler", "unit")

    def __init__(self, scaler: int, unit: int) -> None:
        self.scaler = scaler
        self.unit = unit


def _is_scaler_unit(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], int)
        and isinstance(value[1], int)
        and not isinstance(value[0], bool)
        and -128 <= value[0] <= 127
        and 0 <= value[1] <= 255
    )


def _flatten(value: Any, out: list[Any]) -> None:
    if isinstance(value, list):
        if out and _is_scaler_unit(value):
            out.append(_ScalerUnit(value[0], value[1]))
            return
        for member in value:
            if isinstance(member, list):
                _flatten(member, out)
            else:
                out.append(member)  # most members are leaves: no call for them
    else:
        out.append(value)


def _tagged_entries(body: Any) -> tuple[list[Entry], list[Any]]:
    """Entries of an OBIS-tagged body, and the untagged leading values."""
    tokens: list[Any] = []
    _flatten(body, tokens)
    entries: list[Entry] = []
    untagged: list[Any] = []
    i, n = 0, len(tokens)
    while i < n:
        token = tokens[i]
        if looks_like_obis(token) and i + 1 < n and not isinstance(tokens[i + 1], _ScalerUnit):
            value = tokens[i + 1]
            su = tokens[i + 2] if i + 2 < n and isinstance(tokens[i + 2], _ScalerUnit) else None
            entries.append((token, value, su.scaler, su.unit) if su else (token, value, None, None))
            i += 3 if su else 2
            continue
        if not entries and not isinstance(token, _ScalerUnit):
            untagged.append(token)
        elif entries and i == n - 1 and isinstance(token, (bytes, str)) and not looks_like_obis(token):
            # Netz NOE / Sagemcom: the meter number closes the list without an OBIS code.
            entries.append((METER_NUMBER, token, None, None))
        i += 1
    return entries, untagged


def _entries(body: Any, model: str | None) -> tuple[list[Entry], str | None]:
    """The entries and (when it carries one untagged) the time of a body without a push list."""
    if isinstance(body, list) and not any(isinstance(v, list) or looks_like_obis(v) for v in body):
        entries: list[Entry] = []
        untagged = list(body)  # bare values (Kaifa, L+G without a push list): nothing to scan
    else:
        entries, untagged = _tagged_entries(body)
    list_id = next((text_of(v) for v in untagged if isinstance(v, str) or (isinstance(v, bytes) and len(v) != 12)), None)
    time = next((cosem_datetime(v) for v in untagged if isinstance(v, bytes) and len(v) == 12), None)
    if entries:
        if list_id is not None:
            entries.insert(0, (LIST_ID, list_id, None, None))
        return entries, time
    positional = models.positional_layout(model, body, list_id)
    if positional is None:
        raise UnsupportedError(
            "push layout not recognised (no OBIS codes and no known list): "
            "set the meter's model in the config, or report the capture"
        )
    return positional, time


def map_body(body: Any, *, model: str | None = None) -> Mapped:
    """Readings, meter id and (when the body carries one) the time of a push."""
    plan = push_list_plan(body, model)
    if plan is not None:
        return plan.apply(body)
    entries, time = _entries(body, model)
    resolved = model or models.detect_model((code, value) for code, value, _, _ in entries)
    pairs = [(rule_for(code, resolved, scaler, unit), value) for code, value, scaler, unit in entries]
    return assemble(pairs, time, resolved)
