"""What a push does not say: per-model scalers and positional layouts.

Landis+Gyr and Iskraemeco push register values (attribute 2) without their
scaler; Kamstrup sends OBIS/value pairs without scalers; Kaifa in Norway and
L+G meters configured without a push list send bare values. The scalers and
positions here are those the meters' documentation (and the reference
collector's per-model configuration) give.

Pure data and small functions over it: this module imports nothing of
meterpipe's, so decoder.mapping reads it and never the other way round.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

MODELS: Final = ("e450", "e570", "e360", "am550", "omnipower", "kamstrup", "aidon", "kaifa", "sagemcom")

_CURRENT = (31, 51, 71, 91)
_VOLTAGE = (32, 52, 72)
_POWER_FACTOR = (13, 33, 53, 73)


def _table(current: int, voltage: int, power_factor: int, energy: int = 0) -> Mapping[tuple[int, int], int]:
    table = {(c, 7): current for c in _CURRENT}
    table.update({(c, 7): voltage for c in _VOLTAGE})
    table.update({(c, 7): power_factor for c in _POWER_FACTOR})
    if energy:
        table.update({(c, 8): energy for c in range(1, 90)})
    return MappingProxyType(table)


# (C, D) -> decimal exponent of the raw register value
SCALERS: Final = MappingProxyType(
    {
        "e450": _table(current=-2, voltage=0, power_factor=-3),
        "e360": _table(current=-2, voltage=-1, power_factor=-3),
        "e570": _table(current=0, voltage=0, power_factor=-3),
        "am550": _table(current=-2, voltage=-1, power_factor=-3),
        # Kamstrup HAN: current 0.01 A, energy 0.01 kWh (= 10 Wh), power factor 0.01
        "kamstrup": _table(current=-2, voltage=0, power_factor=-2, energy=1),
        "omnipower": _table(current=-2, voltage=0, power_factor=-2, energy=1),
        # Kaifa (Norway) bare lists: current mA, voltage 0.1 V
        "kaifa": _table(current=-3, voltage=-1, power_factor=-3),
    }
)


def default_scaler(model: str | None, code: bytes) -> int:
    """Decimal exponent of a register the push sends without its scaler."""
    table = SCALERS.get(model or "")
    if table is None:
        return 0
    return table.get((code[2], code[3]), 0)


def detect_model(pairs: Iterable[tuple[bytes, Any]]) -> str | None:
    """Guess the model table from the (OBIS code, value) pairs of a push (config hint wins)."""
    for code, value in pairs:
        text = value.decode("latin-1") if isinstance(value, bytes) else value if isinstance(value, str) else ""
        if text.startswith("Kamstrup"):
            return "kamstrup"
        if text.startswith(("AIDON", "Aidon")):
            return "aidon"
        if text.startswith("KFM"):
            return "kaifa"
        if code[2:5] == bytes((42, 0, 0)):
            if text.startswith("LGZ"):
                return "e450"
            if text.startswith("ISK"):
                return "am550"
    return None


@functools.lru_cache(maxsize=256)
def _code(text: str) -> bytes:
    ab, cde = text.split(":")
    a, b = ab.split("-")
    c, d, e = cde.split(".")
    return bytes((int(a), int(b), int(c), int(d), int(e), 255))


# Kaifa MA304/MA105 (Norway, list identifier KFM_001): (code, exponent, unit)
_KAIFA_HEAD = ("1-1:0.2.129", "0-0:96.1.0", "0-0:96.1.7")
_KAIFA_3P = (
    *_KAIFA_HEAD,
    "1-0:1.7.0", "1-0:2.7.0", "1-0:3.7.0", "1-0:4.7.0",
    "1-0:31.7.0", "1-0:51.7.0", "1-0:71.7.0", "1-0:32.7.0", "1-0:52.7.0", "1-0:72.7.0",
)  # fmt: skip
_KAIFA_1P = (*_KAIFA_HEAD, "1-0:1.7.0", "1-0:2.7.0", "1-0:3.7.0", "1-0:4.7.0", "1-0:31.7.0", "1-0:32.7.0")
_KAIFA_TAIL = ("0-0:1.0.0", "1-0:1.8.0", "1-0:2.8.0", "1-0:3.8.0", "1-0:4.8.0")
KAIFA_LISTS: Final = MappingProxyType(
    {
        1: ("1-0:1.7.0",),
        len(_KAIFA_1P): _KAIFA_1P,
        len(_KAIFA_3P): _KAIFA_3P,
        len(_KAIFA_1P) + 5: _KAIFA_1P + _KAIFA_TAIL,
        len(_KAIFA_3P) + 5: _KAIFA_3P + _KAIFA_TAIL,
    }
)

# Landis+Gyr E450 configured without a push list (Swiss utilities' CII default
# before VSE 2026): 16 values in this order.
LG_NO_PUSH_LIST: Final = (
    "1-0:1.8.0", "1-0:1.8.1", "1-0:1.8.2", "1-0:1.7.0",
    "1-0:2.8.0", "1-0:2.8.1", "1-0:2.8.2", "1-0:2.7.0",
    "1-0:3.8.0", "1-0:3.8.1", "1-0:3.8.2", "1-0:3.7.0",
    "1-0:4.8.0", "1-0:4.8.1", "1-0:4.8.2", "1-0:4.7.0",
)  # fmt: skip


def positional_layout(
    model: str | None, body: Any, list_id: str | None
) -> list[tuple[bytes, Any, int | None, int | None]] | None:
    """(code, value, scaler, unit) for a body of bare values, or None if unknown."""
    values = body if isinstance(body, list) else [body]
    if any(isinstance(v, list) for v in values):
        return None
    if model == "kaifa" or (list_id or "").startswith("KFM_"):
        codes = KAIFA_LISTS.get(len(values))
        if codes is None:
            return None
        return [(_code(c), v, default_scaler("kaifa", _code(c)), None) for c, v in zip(codes, values)]
    if model in (None, "e450", "e570", "e360") and len(values) == len(LG_NO_PUSH_LIST):
        return [(_code(c), v, None, None) for c, v in zip(LG_NO_PUSH_LIST, values)]
    return None
