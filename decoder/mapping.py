"""Turn a decoded data-notification body into named readings with units.

Sans-IO. Layouts handled:

* push-list (IDIS, Landis+Gyr, Iskraemeco): the body's first member is the
  push object list (class, OBIS, attribute, data index per object); members
  follow one per entry. L+G and Iskraemeco send attribute 2 only, so scalers
  come from the per-model table in decoder.models.
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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meterpipe.common.errors import UnsupportedError
from meterpipe.common.schema import Reading, split_decimal
from meterpipe.decoder import models
from meterpipe.decoder.apdu import cosem_datetime
from meterpipe.decoder.axdr import DateBytes, DateTimeBytes, TimeBytes
from meterpipe.decoder.obis import UNITS, default_unit, looks_like_obis, obis_text, reading_name

CLOCK = bytes((0, 0, 1, 0, 0, 255))
METER_NUMBER = bytes((0, 0, 96, 1, 0, 255))
CLASS_DATA, CLASS_REGISTER, CLASS_EXT_REGISTER, CLASS_CLOCK, CLASS_PUSH_SETUP = 1, 3, 4, 8, 40
METER_ID_CODES = ((0, 96, 1, 0), (1, 0, 0, 5), (0, 42, 0, 0), (1, 96, 1, 0))


@dataclass(frozen=True, slots=True)
class Entry:
    """One OBIS-addressed value before naming and scaling."""

    code: bytes
    value: Any
    scaler: int | None = None
    unit: int | None = None


@dataclass(frozen=True, slots=True)
class Mapped:
    readings: tuple[Reading, ...]
    meter_id: str | None
    time: str | None
    model: str | None


class _ScalerUnit:
    __slots__ = ("scaler", "unit")

    def __init__(self, scaler: int, unit: int) -> None:
        self.scaler = scaler
        self.unit = unit


def _is_capture_definition(item: Any) -> bool:
    return (
        isinstance(item, list)
        and len(item) == 4
        and isinstance(item[0], int)
        and isinstance(item[1], bytes)
        and len(item[1]) == 6
    )


def _push_list_entries(body: list[Any]) -> list[Entry]:
    definitions = body[0]
    scalers: dict[bytes, tuple[int, int]] = {}
    for (class_id, code, attribute, _), value in zip(definitions, body):
        if class_id in (CLASS_REGISTER, CLASS_EXT_REGISTER) and attribute == 3 and _is_scaler_unit(value):
            scalers[code] = (value[0], value[1])
    entries = []
    for (class_id, code, attribute, _), value in zip(definitions, body):
        if class_id == CLASS_PUSH_SETUP or attribute != 2:
            continue
        scaler, unit = scalers.get(code, (None, None))
        entries.append(Entry(code, value, scaler, unit))
    return entries


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
            entries.append(Entry(token, value, su.scaler if su else None, su.unit if su else None))
            i += 3 if su else 2
            continue
        if not entries and not isinstance(token, _ScalerUnit):
            untagged.append(token)
        elif entries and i == n - 1 and isinstance(token, (bytes, str)) and not looks_like_obis(token):
            # Netz NOE / Sagemcom: the meter number closes the list without an OBIS code.
            entries.append(Entry(METER_NUMBER, token))
        i += 1
    return entries, untagged


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


@functools.lru_cache(maxsize=4096)
def code_info(code: bytes) -> tuple[str, str, str | None]:
    """OBIS text, reading name and default unit of a code (the same few codes recur)."""
    return obis_text(code), reading_name(code), default_unit(code)


@functools.lru_cache(maxsize=4096)
def _register_info(code: bytes, model: str | None) -> tuple[str, str, str | None, int]:
    """code_info and the model's scaler for a register sent without one, in one lookup."""
    return (*code_info(code), models.default_scaler(model, code))


def _reading(entry: Entry, model: str | None) -> Reading | None:
    if entry.scaler is None:
        obis, name, unit, scaler = _register_info(entry.code, model)
    else:
        obis, name, unit_default = code_info(entry.code)
        scaler = entry.scaler
        unit = UNITS.get(entry.unit) if entry.unit is not None else unit_default
    return make_reading(obis, name, entry.value, scaler, unit)


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


def is_push_list(body: Any) -> bool:
    """Does the body start with its push object list, one definition per member?"""
    return (
        isinstance(body, list)
        and bool(body)
        and isinstance(body[0], list)
        and len(body[0]) == len(body)
        and all(_is_capture_definition(d) for d in body[0])
    )


def _entries(body: Any, model: str | None) -> tuple[list[Entry], str | None]:
    if is_push_list(body):
        return _push_list_entries(body), None
    if isinstance(body, list) and not any(isinstance(v, list) or looks_like_obis(v) for v in body):
        entries: list[Entry] = []
        untagged = list(body)  # bare values (Kaifa, L+G without a push list): nothing to scan
    else:
        entries, untagged = _tagged_entries(body)
    list_id = next((text_of(v) for v in untagged if isinstance(v, str) or (isinstance(v, bytes) and len(v) != 12)), None)
    time = next((cosem_datetime(v) for v in untagged if isinstance(v, bytes) and len(v) == 12), None)
    if entries:
        if list_id is not None:
            entries.insert(0, Entry(bytes((1, 1, 0, 2, 129, 255)), list_id))
        return entries, time
    positional = models.positional_layout(model, body, list_id)
    if positional is None:
        raise UnsupportedError(
            "push layout not recognised (no OBIS codes and no known list): "
            "set the meter's model in the config, or report the capture"
        )
    return [Entry(code, value, scaler, unit) for code, value, scaler, unit in positional], time


def is_clock(code: bytes) -> bool:
    return code[0] == 0 and code[2:5] == CLOCK[2:5]


def map_body(body: Any, *, model: str | None = None) -> Mapped:
    """Readings, meter id and (when the body carries one) the time of a push."""
    entries, time = _entries(body, model)
    resolved = model or models.detect_model((entry.code, entry.value) for entry in entries)
    readings = []
    by_code: dict[bytes, Reading] = {}
    for entry in entries:
        if is_clock(entry.code):  # 0-b:1.0.0, any channel: the push time, not a reading
            time = time or text_of(entry.value)
            continue
        reading = _reading(entry, resolved)
        if reading is not None:
            readings.append(reading)
            by_code.setdefault(entry.code[:5], reading)
    return Mapped(tuple(readings), meter_id_of(by_code), time, resolved)


def meter_id_of(by_code: Mapping[bytes, Reading]) -> str | None:
    """The meter's identifier among the readings (keyed by the first five OBIS bytes)."""
    for a, c, d, e in METER_ID_CODES:
        for b in (0, 1):
            found = by_code.get(bytes((a, b, c, d, e)))
            if found is not None and isinstance(found.value, str):
                return found.value
    return None
