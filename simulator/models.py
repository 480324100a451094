"""The simulated meter models: what each one pushes, and how.

A :class:`ModelSpec` holds a model's real push layout (the objects in the order
the meter sends them, their A-XDR types and the scalers the meter uses) and its
link layer (GBT blocks in HDLC frames, one long HDLC frame, HDLC segmentation).
The layouts follow real captures in the shared corpus:

* ``e450``  L+G E450 (Swiss VSE 2026 push): ``sdc-lg-e450-ch-unenc-vse2026``,
  encrypted like ``dlmsp-lg-e450-enc-gbt-1``;
* ``e570``  L+G E570: ``sdc-lg-e570-ch-unenc-vse2026``;
* ``e360``  L+G E360: ``sdc-lg-e360-ch-unenc-vse2026`` (one frame, format A1);
* ``am550`` Iskraemeco AM550: ``sdc-iskra-am550-ch-unenc-vse2026-hdlcseg``;
* ``omnipower`` Kamstrup Omnipower: list ``Kamstrup_V0001`` as in
  ``ams-kamstrup-no-em001-1``, ciphered like ``dlmsp-kamstrup-omnipower-enc``.

Tables only: the values come from :mod:`meterpipe.simulator.loadcurve`, the
bytes from :mod:`meterpipe.simulator.meter`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

# Quantities a field can carry, and the base unit exponent the load curve
# delivers them in: energies Wh and powers W (10**0), voltages dV (10**-1),
# currents mA (10**-3).
ENERGIES: Final = frozenset({"ai", "ae", "ri", "re"})
POWERS: Final = frozenset({"pi", "pe", "qi", "qe"})
VOLTAGES: Final = ("v1", "v2", "v3")
CURRENTS: Final = ("i1", "i2", "i3")
BASE_EXPONENT: Final = MappingProxyType({
    **{q: 0 for q in ENERGIES | POWERS},
    **{q: -1 for q in VOLTAGES},
    **{q: -3 for q in CURRENTS},
})
UNITS: Final = MappingProxyType({
    "ai": "Wh", "ae": "Wh", "ri": "varh", "re": "varh",
    "pi": "W", "pe": "W", "qi": "var", "qe": "var",
    "v1": "V", "v2": "V", "v3": "V", "i1": "A", "i2": "A", "i3": "A",
})  # fmt: skip
# Quantities that are not readings: the push setup's own list and name, the clock.
STRUCTURAL: Final = frozenset({"push_list", "push_name", "clock"})
TEXTS: Final = frozenset({"meter_id", "serial", "meter_type"})

Quantity = Literal[
    "push_list", "push_name", "clock", "meter_id", "serial", "meter_type",
    "ai", "ae", "ri", "re", "pi", "pe", "qi", "qe",
    "v1", "v2", "v3", "i1", "i2", "i3",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Field:
    """One object of a push: its capture definition, A-XDR type and scaler."""

    obis: str
    quantity: Quantity
    class_id: int = 3
    attribute: int = 2
    tag: int = 0x06  # A-XDR type of the value (0x09 octet-string, 0x0A visible-string)
    exponent: int = 0  # decimal scaler of the register (not sent: L+G push attribute 2 only)

    @property
    def unit(self) -> str | None:
        return UNITS.get(self.quantity)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A meter model: push layout, link layer, identity and cadence."""

    name: str
    title: str
    layout: Literal["capture_objects", "kamstrup"]
    fields: tuple[Field, ...]
    link: Literal["gbt", "single", "segmented"]
    destination: bytes
    source: bytes
    control: int = 0x13
    segment_control: int = 0x13
    block_sizes: tuple[int, ...] = (122,)
    segment_info: int = 154  # information-field bytes per HDLC segment
    clock_deviation: bool = False  # sends its UTC deviation and DST flag in date-times
    interval_s: float = 5.0
    id_prefix: str = "LGZ1030"
    id_digits: int = 9
    title_prefix: bytes = b"LGZg"
    invoke_id_fixed: bool = False  # Kamstrup always sends invoke id 0
    list_id: str = ""
    list_id_obis: str = "1-1:0.2.129"  # Kamstrup's "OBIS list version identifier"
    meter_type: str = ""
    default_security_with_key: int = 0x20

    def readings(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.quantity not in STRUCTURAL)


def _reg(obis: str, q: Quantity, tag: int = 0x06, exponent: int = 0) -> Field:
    return Field(obis, q, 3, 2, tag, exponent)


def _energies(b: int, exponent: int = 0) -> tuple[Field, ...]:
    kinds: tuple[tuple[int, Quantity], ...] = ((1, "ai"), (2, "ae"), (3, "ri"), (4, "re"))
    return tuple(_reg(f"1-{b}:{c}.8.0", q, 0x06, exponent) for c, q in kinds)


def _phases(b: int, kind: Literal["v", "i"], tag: int, exponent: int, order: str = "123") -> tuple[Field, ...]:
    codes = {"v": {"1": 32, "2": 52, "3": 72}, "i": {"1": 31, "2": 51, "3": 71}}[kind]
    out = []
    for p in order:
        q: Quantity = f"{kind}{p}"  # type: ignore[assignment]
        out.append(_reg(f"1-{b}:{codes[p]}.7.0", q, tag, exponent))
    return tuple(out)


def _vse_head(push_obis: str, *, with_name: bool) -> tuple[Field, ...]:
    head = [Field(push_obis, "push_list", 40, 2, 0x01)]
    if with_name:
        head.append(Field(push_obis, "push_name", 40, 1, 0x09))
    head.append(Field("0-0:42.0.0", "meter_id", 1, 2, 0x09))
    return tuple(head)


E450: Final = ModelSpec(
    name="e450",
    title="Landis+Gyr E450",
    layout="capture_objects",
    fields=(
        *_vse_head("0-8:25.9.0", with_name=True),
        Field("0-0:96.1.1", "serial", 1, 2, 0x09),
        Field("0-0:1.0.0", "clock", 8, 2, 0x09),
        *_energies(1),
        _reg("1-0:1.7.0", "pi"),
        _reg("1-0:2.7.0", "pe"),
        *_phases(0, "v", 0x12, 0),
        *_phases(0, "i", 0x12, -2),
    ),
    link="gbt",
    destination=b"\xce\xff",
    source=b"\x03",
    # The first frame carries the LLC header: blocks fill 129-byte information fields.
    block_sizes=(119, 122),
    default_security_with_key=0x30,
)

E570: Final = ModelSpec(
    name="e570",
    title="Landis+Gyr E570",
    layout="capture_objects",
    fields=(
        *_vse_head("0-8:25.9.0", with_name=False),
        *_energies(1),
        _reg("1-0:1.7.0", "pi"),
        _reg("1-0:2.7.0", "pe"),
        *_phases(0, "v", 0x12, 0),
        *_phases(0, "i", 0x12, 0),
    ),
    link="gbt",
    destination=b"\xce\xfd",
    source=b"\x03",
    block_sizes=(116,),
)

E360: Final = ModelSpec(
    name="e360",
    title="Landis+Gyr E360",
    layout="capture_objects",
    fields=(
        *_vse_head("0-6:25.9.0", with_name=False),
        *_energies(1),
        _reg("1-0:1.7.0", "pi"),
        _reg("1-0:2.7.0", "pe"),
        *_phases(0, "v", 0x12, -1, order="132"),
        *_phases(0, "i", 0x12, -2),
    ),
    link="single",
    destination=b"\xcf",
    source=b"\x03",
    clock_deviation=True,
)

AM550: Final = ModelSpec(
    name="am550",
    title="Iskraemeco AM550",
    layout="capture_objects",
    fields=(
        *_vse_head("0-6:25.9.0", with_name=False),
        *_energies(1),
        _reg("1-1:1.7.0", "pi"),
        _reg("1-1:2.7.0", "pe"),
        *_phases(0, "v", 0x12, -1),
        *_phases(0, "i", 0x12, -2),
    ),
    link="segmented",
    destination=b"\xcf",
    source=b"\x02\x23",
    segment_control=0x03,
    segment_info=154,
    clock_deviation=True,
    id_prefix="ISK1030",
    title_prefix=b"ISK\x00",
)

OMNIPOWER: Final = ModelSpec(
    name="omnipower",
    title="Kamstrup Omnipower",
    layout="kamstrup",
    fields=(
        Field("1-1:0.0.5", "meter_id", 1, 2, 0x0A),
        Field("1-1:96.1.1", "meter_type", 1, 2, 0x0A),
        _reg("1-1:1.7.0", "pi"),
        _reg("1-1:2.7.0", "pe"),
        _reg("1-1:3.7.0", "qi"),
        _reg("1-1:4.7.0", "qe"),
        *_phases(1, "i", 0x06, -2),
        *_phases(1, "v", 0x12, 0),
        Field("0-1:1.0.0", "clock", 8, 2, 0x09),
        *_energies(1, exponent=1),
    ),
    link="single",
    destination=b"\x41",
    source=b"\x03",
    interval_s=10.0,
    id_prefix="57065672",
    id_digits=8,
    title_prefix=b"KAME",
    invoke_id_fixed=True,
    list_id="Kamstrup_V0001",
    meter_type="6841131BN243101040",
    default_security_with_key=0x30,
)

MODELS: Final = MappingProxyType({m.name: m for m in (E450, E570, E360, AM550, OMNIPOWER)})
