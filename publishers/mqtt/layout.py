"""MQTT topics and payloads for both layouts (pure functions, no network).

``meterpipe`` layout (default), with ``<base>`` = ``publishers.mqtt.base_topic``:

* ``<base>/<meter>/<reading name>``: the plain value, exact decimal text
  (``230.1``) or the text value (``LGZ1030655933512``);
* ``<base>/<meter>/json``: the whole push as JSON (``schema.readings_json``);
* ``<base>/status``: ``online`` (retained) while connected, ``offline`` (the
  retained last will) otherwise.

``smartmeter-datacollector`` layout: what smartmeter-datacollector 2.0.0's MQTT
sink publishes, so dashboards built for it keep working: for each register it
knows (OBIS C.D.E in its default register map), topic
``smartmeter/<meter id>/<TYPE>`` and payload
``{"value": <float>, "timestamp": <unix seconds>, "obis": "C.D.E"}`` (Python's
``json.dumps`` spacing, that key order). Its value is a float in its unit (W,
Wh, VA, VAh, A, V, Hz; power factor as a fraction), so kilo-units are scaled
by 1000; its timestamp is the meter's clock when sent (naive time taken as
local time, as it does), else the receive time. Text values and registers it
does not know are not published in this layout. ``<meter id>`` is the meter's
logical device name when the push carries one, else the meter name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType

from meterpipe.common.schema import ReadingsMessage, readings_json
from meterpipe.common.values import Reading

_UNSAFE = re.compile(r"[/+#\s\x00]")
_OBIS_CDE = re.compile(r"^\d+-\d+:(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True, slots=True)
class OutMessage:
    """One MQTT message to send (what the spool stores)."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


def topic_part(name: str) -> str:
    """A single topic level: no '/', '+', '#' or blanks."""
    return _UNSAFE.sub("_", name) or "_"


def obis_cde(obis: str) -> tuple[int, int, int] | None:
    m = _OBIS_CDE.match(obis)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def availability_topic(base: str) -> str:
    return f"{base}/status"


def value_topic(base: str, meter: str, reading_name: str) -> str:
    return f"{base}/{topic_part(meter)}/{topic_part(reading_name)}"


def json_topic(base: str, meter: str) -> str:
    return f"{base}/{topic_part(meter)}/json"


def meterpipe_messages(msg: ReadingsMessage, base: str, qos: int, retain: bool) -> list[OutMessage]:
    """The whole push as JSON first (one message, the least latency for it), then a topic per value."""
    doc = json.dumps(readings_json(msg), separators=(",", ":"), ensure_ascii=False)
    out = [OutMessage(json_topic(base, msg.meter), doc.encode("utf-8"), qos, retain)]
    out += [OutMessage(value_topic(base, msg.meter, r.name), r.text().encode("utf-8"), qos, retain)
            for r in msg.push.readings]
    return out


# --- smartmeter-datacollector compatibility -----------------------------------

def _types() -> dict[tuple[int, int, int], str]:
    t: dict[tuple[int, int, int], str] = {
        (1, 7, 0): "ACTIVE_POWER_P", (2, 7, 0): "ACTIVE_POWER_N",
        (3, 7, 0): "REACTIVE_POWER_P", (4, 7, 0): "REACTIVE_POWER_N",
        (13, 7, 0): "POWER_FACTOR", (14, 7, 0): "NET_FREQUENCY",
        (81, 7, 40): "ANGLE_UI_L1", (81, 7, 51): "ANGLE_UI_L2", (81, 7, 62): "ANGLE_UI_L3",
    }
    for phase, c in (("L1", 20), ("L2", 40), ("L3", 60)):
        t[(c + 1, 7, 0)] = f"ACTIVE_POWER_P_{phase}"
        t[(c + 1, 8, 0)] = f"ACTIVE_ENERGY_P_{phase}"
        t[(c + 2, 7, 0)] = f"ACTIVE_POWER_N_{phase}"
        t[(c + 2, 8, 0)] = f"ACTIVE_ENERGY_N_{phase}"
        t[(c + 3, 7, 0)] = f"REACTIVE_POWER_P_{phase}"
        t[(c + 4, 7, 0)] = f"REACTIVE_POWER_N_{phase}"
        t[(c + 11, 7, 0)] = f"CURRENT_{phase}"
        t[(c + 12, 7, 0)] = f"VOLTAGE_{phase}"
        t[(c + 13, 7, 0)] = f"POWER_FACTOR_{phase}"
    for c, name in ((1, "ACTIVE_ENERGY_P"), (2, "ACTIVE_ENERGY_N"),
                    (3, "REACTIVE_ENERGY_P"), (4, "REACTIVE_ENERGY_N"),
                    (5, "REACTIVE_ENERGY_Q1"), (6, "REACTIVE_ENERGY_Q2"),
                    (7, "REACTIVE_ENERGY_Q3"), (8, "REACTIVE_ENERGY_Q4")):
        t[(c, 8, 0)] = name
        t[(c, 8, 1)] = f"{name}_T1"
        t[(c, 8, 2)] = f"{name}_T2"
    return t


SDC_TYPES = MappingProxyType(_types())
_KILO = frozenset({"kw", "kwh", "kvar", "kvarh", "kva", "kvah"})


def sdc_type(reading: Reading) -> str | None:
    cde = obis_cde(reading.obis)
    return SDC_TYPES.get(cde) if cde is not None else None


def sdc_value(reading: Reading) -> float:
    value = Decimal(reading.text())
    if reading.unit and reading.unit.lower() in _KILO:
        value *= 1000
    return float(value)


def sdc_timestamp(msg: ReadingsMessage) -> int:
    if msg.push.time:
        try:
            t = datetime.fromisoformat(msg.push.time)
        except ValueError:
            pass
        else:
            return int(t.astimezone().timestamp())  # naive: local time, as the reference does
    return msg.received_ns // 1_000_000_000


def sdc_source(msg: ReadingsMessage) -> str:
    return topic_part(msg.push.meter_id or msg.meter)


def sdc_topic(msg: ReadingsMessage, type_name: str) -> str:
    return f"smartmeter/{sdc_source(msg)}/{type_name}"


def sdc_messages(msg: ReadingsMessage, qos: int, retain: bool) -> list[OutMessage]:
    out: list[OutMessage] = []
    stamp = sdc_timestamp(msg)
    seen: set[str] = set()
    for r in msg.push.readings:
        type_name = sdc_type(r)
        if type_name is None or not r.is_number or type_name in seen:
            continue
        seen.add(type_name)
        cde = obis_cde(r.obis)
        assert cde is not None
        payload = json.dumps({"value": sdc_value(r), "timestamp": stamp, "obis": "{}.{}.{}".format(*cde)})
        out.append(OutMessage(sdc_topic(msg, type_name), payload.encode(), qos, retain))
    return out
