"""Registers that come less often than the pushes (review 3): Kaifa and Aidon meters send their
energy registers in the hourly list only, their gauges every 10 s. The hour's energy lands in one
quarter; that quarter is a gap (the register's own step is an hour), never a quarter-hour peak."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from meterpipe.common.schema import ReadingsMessage
from meterpipe.common.values import Push, Reading
from meterpipe.publishers.history.aggregate import MeterAggregator, values_of
from meterpipe.publishers.history.query import HistoryReader
from meterpipe.publishers.history.store import HistoryWriter
from tests.publishers.history.helpers import T0, ZURICH, ns

LOAD_W = 2000


def kaifa_push(t: datetime, seq: int) -> ReadingsMessage:
    """A push every 10 s with the power; at each full hour the hourly list with the register too
    (a constant 2000 W load: 2000 Wh more each hour)."""
    readings = [Reading("1-0:1.7.0", "active_power_import", LOAD_W, 0, "W")]
    offset = int((t - T0).total_seconds())
    if offset % 3600 == 0:
        readings.append(Reading("1-0:1.8.0", "active_energy_import", 1_000_000 + 2 * offset // 3600, 0, "kWh"))
    return ReadingsMessage("house", seq, ns(t), Push(tuple(readings), meter_id="6970631400000000"))


def pushes(hours: int) -> list[ReadingsMessage]:
    return [kaifa_push(T0 + timedelta(seconds=10 * i), i + 1) for i in range(hours * 360 + 1)]


def test_an_hourly_register_step_flags_its_minute_a_gap() -> None:
    agg = MeterAggregator()
    for m in pushes(2):
        agg.add(m.received_ns, values_of(m.push.readings))
    minutes = agg.take_all()
    with_energy = [m for m in minutes if m.deltas.get("active_energy_import")]
    assert [m.deltas["active_energy_import"] for m in with_energy] == [2_000_000, 2_000_000]  # 2 kWh in mWh
    assert all(m.gap for m in with_energy)  # pushes came every 10 s, the register an hour apart
    assert not any(m.gap for m in minutes if m not in with_energy)


def test_the_hours_energy_is_no_quarter_hour_peak(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    w = HistoryWriter(path, ZURICH)
    for i, m in enumerate(pushes(6)):
        w.add(m)
        if i % 360 == 0:
            assert w.flush()
    w.close()
    r = HistoryReader(path, ZURICH)
    day = T0.date()
    (total,) = r.energy("house", "day", day, day)
    assert total.deltas["active_energy_import"] == 6 * 2000  # every register step is still booked
    booked = [q for q in r.energy("house", "quarter", day, day) if q.deltas.get("active_energy_import")]
    assert len(booked) == 6 and all(q.gap for q in booked)
    # was: 2000 Wh in one unflagged quarter -> an 8000 W peak for a constant 2000 W load
    assert r.peaks("house", "day", day, day) == [] and r.peaks("house", "month", day, day) == []
    r.close()


def test_the_registers_own_time_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    every = pushes(2)
    cut = 360 + 359  # the last push before the second hour's register, 10 s before it
    w = HistoryWriter(path, ZURICH)
    for m in every[:cut]:
        w.add(m)
    w.close()
    w = HistoryWriter(path, ZURICH)  # the register state is persisted with its own last time
    for m in every[cut:]:
        w.add(m)
    w.close()
    r = HistoryReader(path, ZURICH)
    booked = [q for q in r.energy("house", "quarter", T0.date(), T0.date()) if q.deltas.get("active_energy_import")]
    assert [(q.start, q.gap) for q in booked] == [(T0 + timedelta(hours=1), True), (T0 + timedelta(hours=2), True)]
    assert r.peaks("house", "day", T0.date(), T0.date()) == []
    r.close()


def test_registers_in_every_push_still_give_peaks(tmp_path: Path) -> None:
    from tests.publishers.history.helpers import msg

    path = tmp_path / "h.sqlite"
    w = HistoryWriter(path, ZURICH)
    for i in range(4 * 90):  # an hour, a push every 10 s, 5 Wh each; faster in the second quarter
        w.add(msg(T0 + timedelta(seconds=10 * i), 5 * i + 5 * max(0, min(i, 180) - 90)))
    w.close()
    r = HistoryReader(path, ZURICH)
    (peak,) = r.peaks("house", "day", T0.date(), T0.date())
    assert peak.start == T0 + timedelta(minutes=15) and peak.mean_w > 4 * 450
    r.close()
