"""Costs from ``[web.tariff]``, computed at query time from energy rows, never stored.

The price of an imported kWh is, first match wins: the price of the tariff register
it was counted on (``[web.tariff.registers] t1 = ...``), the time-of-use row covering
the local start of its period, ``import_price``. A time-of-use table needs rows no
longer than its own resolution, so :func:`cost_step` asks for quarter rows then; a
flat or per-register price is linear in the energy, so day or month rows give the
same result with far fewer rows. The monthly fee is shared by days: a range of ten
days in a 30-day month carries a third of it.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from meterpipe.common.web_config import TariffConfig
from meterpipe.publishers.history.aggregate import IMPORT_TOTAL, export_delta, import_delta


@dataclass(slots=True)
class Cost:
    """Energy and money of a range; ``None`` prices when the tariff does not set them."""

    import_wh: float = 0.0
    export_wh: float = 0.0
    import_cost: float | None = None
    export_credit: float | None = None
    fee: float = 0.0

    @property
    def total(self) -> float | None:
        if self.import_cost is None and self.export_credit is None and not self.fee:
            return None
        return (self.import_cost or 0.0) - (self.export_credit or 0.0) + self.fee

    def add(self, other: Cost) -> None:
        self.import_wh += other.import_wh
        self.export_wh += other.export_wh
        if other.import_cost is not None:
            self.import_cost = (self.import_cost or 0.0) + other.import_cost
        if other.export_credit is not None:
            self.export_credit = (self.export_credit or 0.0) + other.export_credit
        self.fee += other.fee

    def as_json(self, currency: str) -> dict[str, object]:
        return {"import_wh": round(self.import_wh, 3), "export_wh": round(self.export_wh, 3),
                "import_cost": _money(self.import_cost), "export_credit": _money(self.export_credit),
                "fee": _money(self.fee), "total": _money(self.total), "currency": currency}


def _money(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def cost_step(tariff: TariffConfig, step: str) -> str:
    """The row step to price a view of ``step`` rows with: quarters when a time-of-use table
    decides the price, else the view's own step."""
    return "quarter" if tariff.time_of_use else step


def time_price(tariff: TariffConfig, at: datetime) -> float | None:
    """The import price (per kWh) at local time ``at`` without a tariff register."""
    minute = at.hour * 60 + at.minute
    for row in tariff.time_of_use:
        if row.covers(at.weekday(), minute):
            return row.price
    return tariff.import_price


def step_cost(tariff: TariffConfig, at: datetime, deltas: dict[str, float]) -> Cost:
    """The cost of one step of energy (``deltas``: register name -> Wh) booked at ``at``."""
    cost = Cost(import_wh=float(import_delta(deltas)), export_wh=float(export_delta(deltas)))
    flat = time_price(tariff, at)
    by_register = dict(tariff.register_prices)
    counted = [name for name in by_register if f"{IMPORT_TOTAL}_{name}" in deltas]
    if counted:
        total = 0.0
        covered = 0.0
        for name, price in by_register.items():
            wh = float(deltas.get(f"{IMPORT_TOTAL}_{name}", 0.0))
            total += wh / 1000 * price
            covered += wh
        rest = cost.import_wh - covered  # energy on registers without their own price
        if rest > 0 and flat is not None:
            total += rest / 1000 * flat
        cost.import_cost = total
    elif flat is not None:
        cost.import_cost = cost.import_wh / 1000 * flat
    if tariff.export_price is not None:
        cost.export_credit = cost.export_wh / 1000 * tariff.export_price
    return cost


def fee_share(tariff: TariffConfig, first: date, last: date) -> float:
    """The monthly fee's share of the local days ``first..last`` (inclusive)."""
    if not tariff.monthly_fee or last < first:
        return 0.0
    share = 0.0
    day = first
    while day <= last:
        days_in_month = calendar.monthrange(day.year, day.month)[1]
        month_end = date(day.year, day.month, days_in_month)
        span = (min(last, month_end) - day).days + 1
        share += tariff.monthly_fee * span / days_in_month
        day = month_end + timedelta(days=1)
    return share


def rows_cost(tariff: TariffConfig, rows: Iterable[tuple[datetime, dict[str, float]]]) -> Cost:
    """The summed cost of energy rows ``(start, deltas)`` (no fee)."""
    total = Cost()
    for start, deltas in rows:
        total.add(step_cost(tariff, start, deltas))
    return total
