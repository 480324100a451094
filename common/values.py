"""The values a decoded push carries: exact numbers, readings, the push itself.

A number is an integer mantissa and a decimal exponent (``value = m * 10**e``),
never a binary float; :func:`decimal_text` renders it exactly (``230.1``).
:class:`Reading` and :class:`Push` are what the decoder produces and the
publishers deliver; :mod:`meterpipe.common.schema` puts them on the wire.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from meterpipe.common.errors import SchemaError

if TYPE_CHECKING:
    from decimal import Decimal

MAX_EXPONENT = 128  # a COSEM scaler is an int8; beyond it decimal text would grow without bound
_OBIS = re.compile(r"^\d{1,3}-\d{1,3}:\d{1,3}\.\d{1,3}\.\d{1,3}(\*\d{1,3})?$")
_VALID_OBIS: set[str] = set()  # a cache of OBIS texts already checked, bounded in Reading.__post_init__


def decimal_text(mantissa: int, exponent: int) -> str:
    """Render ``mantissa * 10**exponent`` exactly as decimal text (``230.1``)."""
    if exponent >= 0:
        return str(mantissa * 10**exponent)
    sign = "-" if mantissa < 0 else ""
    digits = str(abs(mantissa)).rjust(-exponent + 1, "0")
    return f"{sign}{digits[:exponent]}.{digits[exponent:]}"


def split_decimal(value: Decimal | float | int) -> tuple[int, int]:
    """Exact (mantissa, exponent) of a number; floats go through their shortest repr."""
    if isinstance(value, bool):
        return int(value), 0
    if isinstance(value, int):
        return value, 0
    from decimal import Decimal  # the decoder's mapping calls this: readers never load decimal

    dec = value if isinstance(value, Decimal) else Decimal(repr(float(value)))
    if not dec.is_finite():
        raise SchemaError(f"value {value!r} is not a finite number")
    sign, digits, exp = dec.as_tuple()
    assert isinstance(exp, int)
    mantissa = int("".join(map(str, digits)) or "0")
    return (-mantissa if sign else mantissa), exp


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of a push: OBIS code, stable name, exact value, unit."""

    obis: str
    name: str
    value: int | str
    exponent: int = 0
    unit: str | None = None

    def __post_init__(self) -> None:
        if self.obis not in _VALID_OBIS:  # the same few codes recur: match each once
            if not isinstance(self.obis, str) or not _OBIS.match(self.obis):
                raise SchemaError(f"invalid OBIS code {self.obis!r}")
            if len(_VALID_OBIS) < 10_000:
                _VALID_OBIS.add(self.obis)
        if isinstance(self.value, bool) or not isinstance(self.value, (int, str)):
            raise SchemaError(f"reading {self.obis}: value must be int or str")
        if isinstance(self.value, str) and self.exponent != 0:
            raise SchemaError(f"reading {self.obis}: text value with an exponent")
        if type(self.exponent) is not int or not -MAX_EXPONENT <= self.exponent <= MAX_EXPONENT:
            raise SchemaError(f"reading {self.obis}: exponent {self.exponent!r} outside "
                              f"-{MAX_EXPONENT}..{MAX_EXPONENT}")

    @property
    def is_number(self) -> bool:
        return isinstance(self.value, int)

    def text(self) -> str:
        """The value as exact decimal text (``"0.09"``) or the text itself."""
        if isinstance(self.value, str):
            return self.value
        return decimal_text(self.value, self.exponent)

    def json_value(self) -> int | float | str:
        """The value for JSON: int when whole, float parsed from exact text, else str."""
        if isinstance(self.value, str):
            return self.value
        if self.exponent >= 0:
            return int(self.text())
        return float(self.text())

    def as_json(self) -> dict[str, Any]:
        return {"obis": self.obis, "name": self.name, "value": self.json_value(), "unit": self.unit}


@dataclass(frozen=True, slots=True)
class Push:
    """Everything the decoder learnt from one complete push of a meter."""

    readings: tuple[Reading, ...]
    meter_id: str | None = None
    system_title: str | None = None  # hex
    time: str | None = None  # ISO-8601 as the meter stated it, offset kept when sent
    encrypted: bool = False
    authenticated: bool = False  # GCM tag verified
    invocation_counter: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "meter_id": self.meter_id,
            "system_title": self.system_title,
            "time": self.time,
            "authenticated": self.authenticated,
            "readings": [r.as_json() for r in self.readings],
        }
