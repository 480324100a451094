"""The aggregation core: pushes in, closed minutes (with their energy deltas) out. Sans-IO.

Per meter, a :class:`MeterAggregator` is fed ``(receive time, values)`` in time
order and cuts them into UTC minutes. Each closed :class:`Minute` holds

* per gauge (W, V, A, Hz, ...): count, exact sum, min and max;
* per register (Wh, kWh, varh, ...): the last value, in milli-units of the
  base unit (mWh, mvarh, mVAh), exact for every exponent down to 1e-3 Wh;
* the energy booked in it: for each step between consecutive pushes, the
  register difference, booked in the minute (and so the quarter) of the later
  push. A register that goes down starts a new segment (delta 0, never
  negative); a step over more than :data:`GAP_S` seconds (between pushes, or
  between two values of the same register) is booked but flags the minute
  ``gap``, so it is never a quarter-hour peak;
* the register state after its last push, so that a store which commits the
  minute can persist where the deltas continue after a restart.

Quarters are UTC-epoch aligned (every real zone offset is a multiple of 15
minutes); local days are sums of quarters, see :func:`sum_days`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from types import MappingProxyType
from typing import Generic, TypeVar
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
EXPORT_TOTAL = "active_energy_export"
_IMPORT_TARIFF = re.compile(r"^active_energy_import_t\d+$")
_EXPORT_TARIFF = re.compile(r"^active_energy_export_t\d+$")
N = TypeVar("N", int, float)


@dataclass(frozen=True, slots=True)
class Value:
    """A numeric value of a push, as the history takes it in: name, unit, exact number."""

    name: str
    unit: str | None
    mantissa: int
    exponent: int


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


def import_delta(deltas: Mapping[str, N]) -> N | int:
    """The active import of a period: the total register, else the sum of its tariff registers
    (DSMR meters send 1.8.1 and 1.8.2 only). The one rule for history, peaks, pages and costs."""
    if IMPORT_TOTAL in deltas:
        return deltas[IMPORT_TOTAL]
    return sum(v for k, v in deltas.items() if _IMPORT_TARIFF.match(k))


def export_delta(deltas: Mapping[str, N]) -> N | int:
    """The active export of a period: the total register, else the sum of its tariff registers."""
    if EXPORT_TOTAL in deltas:
        return deltas[EXPORT_TOTAL]
    return sum(v for k, v in deltas.items() if _EXPORT_TARIFF.match(k))


@dataclass(slots=True)
class RegisterState:
    """Where the deltas continue: the time of the last push, and per register its value
    (milli-units) and when it last came (a register may come less often than the pushes:
    Kaifa and Aidon meters send them in the hourly list only)."""

    last_ns: int | None = None
    values: dict[str, int] = field(default_factory=dict)
    times: dict[str, int] = field(default_factory=dict)  # register -> receive ns of its last value

    def copy(self) -> RegisterState:
        return RegisterState(self.last_ns, dict(self.values), dict(self.times))


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
        gap_ns = GAP_S * 1_000_000_000
        gap = st.last_ns is not None and t_ns - st.last_ns > gap_ns
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
                # the register's own step: an hour's energy in one minute is no quarter-hour's peak
                prev_t = st.times.get(v.name, st.last_ns) if prev is not None else None
                gap = gap or (prev_t is not None and t_ns - prev_t > gap_ns)
                m.deltas[v.name] = m.deltas.get(v.name, 0) + delta
                st.values[v.name] = value
                st.times[v.name] = t_ns
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


K = TypeVar("K", int, str)


def add_into(acc: dict[K, int], deltas: Mapping[K, int]) -> None:
    for k, v in deltas.items():
        acc[k] = acc.get(k, 0) + v


@dataclass(slots=True)
class DaySum(Generic[K]):
    """A local day summed from its quarters: the deltas, any gap, the highest non-gap quarter."""

    deltas: dict[K, int]
    gap: bool = False
    peak_q: int | None = None
    peak_mwh: int = 0


def sum_days(quarters: Iterable[tuple[int, bool, int, Mapping[K, int]]],
             zone: ZoneInfo) -> dict[date, DaySum[K]]:
    """Quarter rows ``(q, gap, import milli-Wh, deltas)`` grouped into their local days (the one rule
    for the day rows and for a reader in another zone). A peak is the highest non-gap quarter with
    some import: a quarter without any (the registers did not come in it) is no peak of 0 W."""
    days: dict[date, DaySum[K]] = {}
    for q, gap, imp, deltas in quarters:
        d = day_of_quarter(q, zone)
        day = days.get(d)
        if day is None:
            day = days[d] = DaySum({})
        add_into(day.deltas, deltas)
        day.gap = day.gap or gap
        if not gap and imp > 0 and (day.peak_q is None or imp > day.peak_mwh):
            day.peak_q, day.peak_mwh = q, imp
    return days
