"""OBIS codes: text form, stable reading names and the units of COSEM.

Names are stable snake_case identifiers that publishers use as MQTT topic
parts, CSV columns and journal fields, so they never change once released.
An OBIS code without a name here passes through as ``obis_<a>_<b>_<c>_<d>_<e>``.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

# (C, D, E) of electricity codes (A = 1, any B channel) -> name
_PHASE_NAMES: Final = {21: "l1", 41: "l2", 61: "l3"}


def _electricity_names() -> dict[tuple[int, int, int], str]:
    names: dict[tuple[int, int, int], str] = {}
    quantities = {
        1: "active_{}_import",
        2: "active_{}_export",
        3: "reactive_{}_import",
        4: "reactive_{}_export",
        9: "apparent_{}_import",
        10: "apparent_{}_export",
    }
    for offset, phase in ((0, ""), (20, "_l1"), (40, "_l2"), (60, "_l3")):
        for c, pattern in quantities.items():
            names[(c + offset, 7, 0)] = pattern.format("power") + phase
            names[(c + offset, 8, 0)] = pattern.format("energy") + phase
            for tariff in range(1, 5):
                names[(c + offset, 8, tariff)] = pattern.format("energy") + phase + f"_t{tariff}"
    for q in range(5, 9):
        names[(q, 8, 0)] = f"reactive_energy_q{q - 4}"
        for tariff in range(1, 5):
            names[(q, 8, tariff)] = f"reactive_energy_q{q - 4}_t{tariff}"
    for c, phase in ((31, "l1"), (51, "l2"), (71, "l3"), (91, "neutral")):
        names[(c, 7, 0)] = f"current_{phase}"
    for c, phase in ((32, "l1"), (52, "l2"), (72, "l3")):
        names[(c, 7, 0)] = f"voltage_{phase}"
    for c, phase in ((13, ""), (33, "_l1"), (53, "_l2"), (73, "_l3")):
        names[(c, 7, 0)] = f"power_factor{phase}"
    names[(14, 7, 0)] = "frequency"
    names[(81, 7, 40)] = "angle_ui_l1"
    names[(81, 7, 51)] = "angle_ui_l2"
    names[(81, 7, 62)] = "angle_ui_l3"
    names[(0, 2, 129)] = "list_version"
    names[(0, 0, 5)] = "meter_id"
    names[(96, 1, 0)] = "meter_serial"
    names[(96, 1, 1)] = "meter_model"
    names[(0, 2, 8)] = "dsmr_version"
    for c, phase in ((32, "l1"), (52, "l2"), (72, "l3")):
        names[(c, 32, 0)] = f"voltage_sags_{phase}"
        names[(c, 36, 0)] = f"voltage_swells_{phase}"
    return names


ELECTRICITY_NAMES: Final = MappingProxyType(_electricity_names())

# (C, D, E) of abstract codes (A = 0)
ABSTRACT_NAMES: Final = MappingProxyType(
    {
        (1, 0, 0): "clock",
        (42, 0, 0): "logical_device_name",
        (96, 1, 0): "meter_serial",
        (96, 1, 1): "equipment_id",
        (96, 7, 21): "power_failures",
        (96, 7, 9): "long_power_failures",
        (96, 13, 0): "text_message",
        (17, 0, 0): "power_threshold",
        (24, 1, 0): "mbus_device_type",
        (24, 2, 1): "mbus_value",
        (24, 2, 3): "mbus_value",
        (96, 1, 7): "meter_model",
        (96, 14, 0): "current_tariff",
        (96, 3, 10): "disconnector_state",
        (0, 2, 129): "list_version",
    }
)

# COSEM unit enumeration (IEC 62056-6-2) -> symbol, for the units meters push.
UNITS: Final = MappingProxyType(
    {
        1: "a",
        2: "mo",
        3: "wk",
        4: "d",
        5: "h",
        6: "min",
        7: "s",
        8: "°",
        9: "°C",
        10: "currency",
        11: "m",
        12: "m/s",
        13: "m³",
        14: "m³",
        15: "m³/h",
        16: "m³/h",
        17: "m³/d",
        18: "m³/d",
        19: "l",
        20: "kg",
        21: "N",
        22: "Nm",
        23: "Pa",
        24: "bar",
        25: "J",
        26: "J/h",
        27: "W",
        28: "VA",
        29: "var",
        30: "Wh",
        31: "VAh",
        32: "varh",
        33: "A",
        34: "C",
        35: "V",
        36: "V/m",
        37: "F",
        38: "Ω",
        44: "Hz",
        46: "Wh",  # active energy meter constant: pulses; kept as the energy unit
        53: "A²h",
        54: "V²h",
        56: "%",
        57: "Ah",
        60: "Wh",
        254: None,  # other
        255: None,  # count / no unit
    }
)


def obis_text(code: bytes) -> str:
    """``01 00 01 08 00 FF`` -> ``1-0:1.8.0``; ``*F`` only when F is not 255."""
    a, b, c, d, e, f = code
    text = f"{a}-{b}:{c}.{d}.{e}"
    return text if f == 255 else f"{text}*{f}"


def looks_like_obis(value: object) -> bool:
    """A 6-byte octet-string that can be an OBIS code in a push."""
    return (
        isinstance(value, bytes)
        and len(value) == 6
        and value[0] <= 15
        and value[1] <= 64
        and value[2] <= 200
        and value[3] <= 255
    )


def reading_name(code: bytes) -> str:
    a, b, c, d, e, f = code
    name: str | None = None
    if a == 1:
        name = ELECTRICITY_NAMES.get((c, d, e))
    elif a == 0:
        name = ABSTRACT_NAMES.get((c, d, e))
        if name is not None and b not in (0, 255):
            name = f"{name}_ch{b}"
    if name is None or f != 255:
        name = f"obis_{a}_{b}_{c}_{d}_{e}" + ("" if f == 255 else f"_{f}")
    return name


def default_unit(code: bytes) -> str | None:
    """The unit an electricity register has when the push does not say."""
    a, _, c, d, _, _ = code
    if a != 1 or c in (0, 96):
        return None
    if d in (7, 4, 5, 6, 24, 25, 26):  # instantaneous / demand
        if c in (31, 51, 71, 91):
            return "A"
        if c in (32, 52, 72):
            return "V"
        if c in (13, 33, 53, 73):
            return None
        if c == 14:
            return "Hz"
        base = c % 20
        return {1: "W", 2: "W", 3: "var", 4: "var", 9: "VA", 10: "VA"}.get(base)
    if d in (8, 9, 10, 29):  # energy registers
        base = c % 20 if c < 80 else c
        return {1: "Wh", 2: "Wh", 3: "varh", 4: "varh", 5: "varh", 6: "varh", 7: "varh", 8: "varh", 9: "VAh", 10: "VAh"}.get(base)
    return None
