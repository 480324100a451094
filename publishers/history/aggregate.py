"""The aggregation core: pushes in, closed minutes (with their energy deltas) out. Sans-IO.

Per meter, a :class:`MeterAggregator` is fed ``(receive time, values)`` in time
order and cuts them into UTC minutes. Each closed :class:`Minute` holds

* per gauge (W, V, A, Hz, ...): count, exact sum, min and max;
* per register (Wh, kWh, varh, ...): the last value, in milli-units of the
  base unit (mWh, mvarh, mVAh), exact for every exponent down to 1e-3 Wh;
* the energy booked in it: for each step between consecutive pushes, the
  register difference, booked in the minute (and so the quarter) of the later
  push. A register that goes down starts a new segment (delta 0, never
  negative); a step over more than :data:`GAP_S` seconds is booked but flags
  the minute ``gap``;
* the register state after its last push, so that a store which commits the
  minute can persist where the deltas continue after a restart.

Quarters are UTC-epoch aligned (every real zone offset is a multiple of 15
minutes); local days are sums of quarters, see :func:`day_of_quarter`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from types import MappingProxyType
from zoneinfo import ZoneInfo

from meterpipe.common.values import Reading
from meterpipe.publishers.history.codec import GaugeCell

GAP_S = 300  # no push for longer than this: the step that ends it flags its period
QUARTER_S = 900
MINUTE_NS = 60_000_000_000

# unit -> (base unit, exponent shift to milli-units of the base unit)
REGISTER_UNITS: Mapping[str, tuple[str, int]] = MappingProxyType({
    "Wh": ("Wh", 3), "kWh": ("Wh", 6), "MWh": ("Wh", 9),
    "varh": ("varh", 3), "kvarh": ("varh", 6), "Mvarh": ("varh", 9),
    "VAh": ("VAh", 3), "kVAh": ("VAh", 6), "MVAh": ("VAh", 9),
})
IMPORT_TOTAL = "active_energy_import"
_IMPORT_TARIFF = re.compile(r"^active_energy_import_t\d+$")


@dataclass(frozen=True, slots=True)
class Value:
    """A numeric value of a push, as the history takes it in: name, unit, exact number."""

    name: str
    unit: str | None
    mantissa: int
    exponent: int

    @property
    def is_register(self) -> bool:
        return self.unit in REGISTER_UNITS


def values_of(readings: Iterable[Reading]) -> list[Value]:
    """The numeric readings of a push (text readings are not stored)."""
    return [Value(r.name, r.unit, r.value, r.exponent) for r in readings if isinstance(r.value, int)]


def to_milli(mantissa: int, exponent: int, shift: int) -> int:
    """``mantissa * 10**(exponent + shift)`` as an integer, rounded half away from zero."""
    e = exponent + shift
    factor: int = 10 ** abs(e)
    if e >= 0:
        return mantissa * factor
    q, r = divmod(abs(mantissa), factor)
    if 2 * r >= factor:
        q += 1
    return q if mantissa >= 0 else -q


def base_unit(unit: str | None) -> str | None:
    """The unit a quantity is stored in: registers in their base unit, gauges as sent."""
    reg = REGISTER_UNITS.get(unit or "")
    return reg[0] if reg is not None else unit


def import_delta(deltas: Mapping[str, int]) -> int:
    """The active import of a period (milli-Wh): the total register, else the sum of its tariffs."""
    if IMPORT_TOTAL in deltas:
        return deltas[IMPORT_TOTAL]
    return sum(v for k, v in deltas.items() if _IMPORT_TARIFF.match(k))


@dataclass(slots=True)
class RegisterState:
    """Where the deltas continue: the time and register values (milli-units) of the last push."""

    last_ns: int | None = None
    values: dict[str, int] = field(default_factory=dict)

    def copy(self) -> RegisterState:
        return RegisterState(self.last_ns, dict(self.values))


Sample = tuple[int, tuple[tuple[str, int, int], ...]]  # (receive ns, ((name, mantissa, exponent), ...))


@dataclass(slots=True)
class Minute:
    """One closed (or, at close, open) UTC minute of one meter."""

    minute: int  # unix seconds // 60
    gauges: dict[str, GaugeCell] = field(default_factory=dict)
    registers: dict[str, int] = field(default_factory=dict)  # last value, milli-units
    deltas: dict[str, int] = field(default_factory=dict)  # energy booked here, milli-units
    gap: bool = False
    pushes: int = 0
    first_ns: int = 0  # receive time of its first push
    samples: list[Sample] = field(default_factory=list)
    units: dict[str, str | None] = field(default_factory=dict)  # name -> stored unit
    meter_id: str | None = None
    state: RegisterState = field(default_factory=RegisterState)  # after the last push

    @property
    def quarter(self) -> int:
        return self.minute // 15

    @property
    def end_ns(self) -> int:
        assert self.state.last_ns is not None
        return self.state.last_ns


class MeterAggregator:
    """Cuts one meter's pushes into minutes and books register differences."""

    def __init__(self, state: RegisterState | None = None, *, keep_samples: bool = True) -> None:
        self.state = state.copy() if state is not None else RegisterState()
        self.keep_samples = keep_samples
        self._open: Minute | None = None
        self._closed: list[Minute] = []
        self.bad_values = 0
        self.out_of_order = 0

    @property
    def last_ns(self) -> int | None:
        return self.state.last_ns

    def add(self, t_ns: int, values: Iterable[Value], meter_id: str | None = None) -> bool:
        """Book one push; False (and nothing booked) when it is not after the last one."""
        if self.state.last_ns is not None and t_ns <= self.state.last_ns:
            self.out_of_order += 1
            return False
        minute_no = t_ns // MINUTE_NS
        m = self._open
        if m is None or m.minute != minute_no:
            if m is not None:
                self._closed.append(m)
            m = self._open = Minute(minute_no)
        st = self.state
        gap = st.last_ns is not None and t_ns - st.last_ns > GAP_S * 1_000_000_000
        sample: list[tuple[str, int, int]] = []
        for v in values:
            reg = REGISTER_UNITS.get(v.unit or "")
            unit: str | None = v.unit
            if reg is not None:
                unit, shift = reg
                value = to_milli(v.mantissa, v.exponent, shift)
                if value < 0:
                    self.bad_values += 1
                    continue
                prev = st.values.get(v.name)
                delta = value - prev if prev is not None and value >= prev else 0
                m.deltas[v.name] = m.deltas.get(v.name, 0) + delta
                st.values[v.name] = value
                m.registers[v.name] = value
                sample.append((v.name, value, -3))
            else:
                cell = m.gauges.get(v.name)
                if cell is None:
                    m.gauges[v.name] = GaugeCell(1, v.mantissa, v.mantissa, v.mantissa, v.exponent)
                else:
                    cell.add(v.mantissa, v.exponent)
                sample.append((v.name, v.mantissa, v.exponent))
            m.units[v.name] = unit
        st.last_ns = t_ns
        m.gap = m.gap or gap
        if not m.pushes:
            m.first_ns = t_ns
        m.pushes += 1
        if meter_id is not None:
            m.meter_id = meter_id
        if self.keep_samples:
            m.samples.append((t_ns, tuple(sample)))
        m.state = st.copy()
        return True

    def take_closed(self) -> list[Minute]:
        """The minutes closed since the last call (a later push has started a new minute)."""
        out, self._closed = self._closed, []
        return out

    def take_all(self) -> list[Minute]:
        """Every minute, the open one too (at close: later pushes of it merge into its row)."""
        out = self.take_closed()
        if self._open is not None:
            out.append(self._open)
            self._open = None
        return out


# --- the local calendar ----------------------------------------------------------


def day_of_quarter(q: int, zone: ZoneInfo) -> date:
    """The local day a UTC-aligned quarter (unix s // 900) starts in."""
    return datetime.fromtimestamp(q * QUARTER_S, zone).date()


def local_midnight(d: date, zone: ZoneInfo) -> datetime:
    """The start of local day ``d`` (a real instant, even on DST days)."""
    naive = datetime(d.year, d.month, d.day)
    aware = naive.replace(tzinfo=zone)
    # a zone that skips midnight (a few do): the first instant of the day
    utc_guess = aware.timestamp()
    back = datetime.fromtimestamp(utc_guess, zone)
    if back.date() != d:
        return datetime.fromtimestamp(utc_guess + 3600, zone)
    return back


def day_bounds(first: date, last: date, zone: ZoneInfo) -> tuple[int, int]:
    """Unix seconds of the start of ``first`` and of the day after ``last``."""
    return (int(local_midnight(first, zone).timestamp()),
            int(local_midnight(last + timedelta(days=1), zone).timestamp()))


def quarters_of_day(d: date, zone: ZoneInfo) -> range:
    """The quarter numbers of a local day: 96, or 92/100 on DST days."""
    start, end = day_bounds(d, d, zone)
    return range(start // QUARTER_S, end // QUARTER_S)


def add_into(acc: dict[str, int], deltas: Mapping[str, int]) -> None:
    for k, v in deltas.items():
        acc[k] = acc.get(k, 0) + v
