"""Home Assistant MQTT discovery: one retained config message per meter and reading.

Topic ``<prefix>/sensor/meterpipe_<meter>/<reading name>/config``; the payload
names the state topic (the plain value topic of the meterpipe layout, or the
smartmeter-datacollector JSON topic with a value template), the unit as the
meter states it (Home Assistant converts Wh/kWh itself), a ``device_class``
from the unit and a ``state_class``: ``total_increasing`` for energy registers
(OBIS C.8.x), ``measurement`` for other numbers, none for text. All sensors of
a meter belong to one device ``meterpipe_<meter>`` whose manufacturer is taken
from the meter id's FLAG prefix when known (LGZ -> Landis+Gyr, ...).
"""

from __future__ import annotations

import json
import re
from types import MappingProxyType
from typing import Any

from meterpipe.common.values import Reading
from meterpipe.publishers.mqtt.layout import OutMessage, obis_cde

_ID_SAFE = re.compile(r"[^A-Za-z0-9_-]")

DEVICE_CLASS_BY_UNIT = MappingProxyType({
    "wh": "energy", "kwh": "energy", "mwh": "energy",
    "w": "power", "kw": "power",
    "v": "voltage",
    "a": "current",
    "hz": "frequency",
    "var": "reactive_power", "kvar": "reactive_power",
    "va": "apparent_power", "kva": "apparent_power",
})
# Home Assistant spells these units its own way
_HA_UNIT = MappingProxyType({"var": "var", "kvar": "kvar", "va": "VA", "kva": "kVA"})

MANUFACTURERS = MappingProxyType({
    "LGZ": "Landis+Gyr",
    "ISK": "Iskraemeco",
    "KFM": "Kaifa",
    "KAM": "Kamstrup",
    "KAMSTRUP": "Kamstrup",
})
_POWER_FACTOR_C = frozenset({13, 33, 53, 73})


def object_id(text: str) -> str:
    return _ID_SAFE.sub("_", text) or "_"


def device_class(reading: Reading) -> str | None:
    if not reading.is_number:
        return None
    cde = obis_cde(reading.obis)
    if cde is not None and cde[0] in _POWER_FACTOR_C and cde[1] == 7 and not reading.unit:
        return "power_factor"
    if reading.unit is None:
        return None
    return DEVICE_CLASS_BY_UNIT.get(reading.unit.lower())


def state_class(reading: Reading) -> str | None:
    if not reading.is_number:
        return None
    cde = obis_cde(reading.obis)
    if cde is not None and cde[1] == 8:
        return "total_increasing"
    return "measurement"


def unit_of_measurement(reading: Reading) -> str | None:
    if reading.unit is None or not reading.is_number:
        return None
    return _HA_UNIT.get(reading.unit.lower(), reading.unit)


def manufacturer(meter_id: str | None) -> str | None:
    if not meter_id:
        return None
    upper = meter_id.upper()
    for prefix in sorted(MANUFACTURERS, key=len, reverse=True):
        if upper.startswith(prefix):
            return MANUFACTURERS[prefix]
    return None


def device(meter: str, meter_id: str | None) -> dict[str, Any]:
    dev: dict[str, Any] = {"identifiers": [f"meterpipe_{object_id(meter)}"], "name": meter}
    maker = manufacturer(meter_id)
    if maker:
        dev["manufacturer"] = maker
    if meter_id:
        dev["serial_number"] = meter_id
    return dev


def config_topic(prefix: str, meter: str, reading_name: str) -> str:
    return f"{prefix}/sensor/meterpipe_{object_id(meter)}/{object_id(reading_name)}/config"


def config_message(
    meter: str,
    reading: Reading,
    meter_id: str | None,
    *,
    prefix: str,
    state_topic: str,
    availability_topic: str,
    value_template: str | None = None,
    qos: int = 1,
) -> OutMessage:
    """The retained discovery config for one reading of one meter."""
    payload: dict[str, Any] = {
        "name": reading.name,
        "unique_id": f"meterpipe_{object_id(meter)}_{object_id(reading.name)}",
        "state_topic": state_topic,
    }
    if value_template:
        payload["value_template"] = value_template
    unit = unit_of_measurement(reading)
    if unit:
        payload["unit_of_measurement"] = unit
    dc = device_class(reading)
    if dc:
        payload["device_class"] = dc
    sc = state_class(reading)
    if sc:
        payload["state_class"] = sc
    payload["availability_topic"] = availability_topic
    payload["device"] = device(meter, meter_id)
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return OutMessage(config_topic(prefix, meter, reading.name), body, qos, True)
