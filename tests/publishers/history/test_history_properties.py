"""Hypothesis properties of the aggregation, through the real writer and reader."""

from __future__ import annotations

import itertools
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterpipe.publishers.history.aggregate import MeterAggregator, values_of
from meterpipe.publishers.history.query import HistoryReader
from meterpipe.publishers.history.store import HistoryWriter
from tests.publishers.history.helpers import msg

ZONES = ("Europe/Zurich", "Europe/Brussels")
STARTS = (datetime(2026, 3, 28, 21, 0), datetime(2026, 10, 24, 22, 30), datetime(2026, 5, 1, 23, 50))

# a push: seconds since the previous one (some beyond the 300 s gap), and how the register moves
steps = st.lists(st.tuples(st.one_of(st.integers(1, 120), st.integers(1, 7200)),
                           st.one_of(st.integers(0, 3000), st.just(-1))), min_size=2, max_size=120)


def registers(moves: list[tuple[int, int]]) -> list[int]:
    """Register values: -1 is a meter swap (back to a small value), anything else an increase."""
    value, out = 1_000_000, []
    for _, move in moves:
        value = 17 if move < 0 else value + move
        out.append(value)
    return out


@settings(max_examples=40, deadline=None)
@given(steps, st.sampled_from(ZONES), st.sampled_from(STARTS))
def test_quarters_of_each_day_add_up_to_the_day(moves: list[tuple[int, int]], zone_name: str,
                                                 start: datetime) -> None:
    check_days(moves, zone_name, start)


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3600), st.one_of(st.integers(0, 3000), st.just(-1))),
                min_size=2, max_size=600), st.sampled_from(ZONES), st.sampled_from(STARTS))
def test_quarters_of_each_day_add_up_to_the_day_long(moves: list[tuple[int, int]], zone_name: str,
                                                      start: datetime) -> None:
    check_days(moves, zone_name, start)


def check_days(moves: list[tuple[int, int]], zone_name: str, start: datetime) -> None:
    zone = ZoneInfo(zone_name)
    t = start.replace(tzinfo=zone).astimezone(UTC)  # steps in real time, not wall time
    values = registers(moves)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "h.sqlite"
        w = HistoryWriter(path, zone)
        times = []
        for (dt, _), v in zip(moves, values, strict=True):
            t += timedelta(seconds=dt)
            times.append(t)
            w.add(msg(t, v))
        w.close()
        r = HistoryReader(path, zone)
        first, last = times[0].astimezone(zone).date(), times[-1].astimezone(zone).date()
        days = r.energy("house", "day", first, last)
        quarters = r.energy("house", "quarter", first, last)
        for day in days:
            inside = [q for q in quarters if day.start <= q.start < day.end]
            assert sum(q.deltas["active_energy_import"] for q in inside) == day.deltas["active_energy_import"]
            assert day.gap == any(q.gap for q in inside)
        want = sum(b - a for a, b in itertools.pairwise(values) if b >= a)
        assert sum(d.deltas["active_energy_import"] for d in days) == want
        # a day without a reset: its delta is its last push minus the last push before it (or its first)
        for day in days:
            idx = [i for i, x in enumerate(times) if day.start <= x < day.end]
            lo = max(idx[0] - 1, 0)
            seg = values[lo:idx[-1] + 1]
            if all(b >= a for a, b in itertools.pairwise(seg)):
                assert day.deltas["active_energy_import"] == seg[-1] - seg[0]
        months = r.energy("house", "month", first, last)
        assert sum(m.deltas["active_energy_import"] for m in months) == want
        r.close()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 10**7), min_size=1, max_size=200), st.integers(1, 600))
def test_a_register_reset_never_gives_a_negative_delta(values: list[int], step_s: int) -> None:
    agg = MeterAggregator()
    t0 = datetime(2026, 5, 1, tzinfo=ZoneInfo("UTC"))
    for i, v in enumerate(values):
        m = msg(t0 + timedelta(seconds=i * step_s), v)
        agg.add(m.received_ns, values_of(m.push.readings))
    minutes = agg.take_all()
    deltas = [m.deltas["active_energy_import"] for m in minutes]
    assert all(d >= 0 for d in deltas)
    assert sum(deltas) == 1000 * sum(b - a for a, b in itertools.pairwise(values) if b >= a)


@pytest.mark.parametrize("zone_name", ZONES)
@pytest.mark.parametrize(("day", "hours"), [(date(2026, 3, 29), 23), (date(2026, 10, 25), 25)])
def test_dst_days_have_23_and_25_hours(tmp_path: Path, zone_name: str, day: date, hours: int) -> None:
    zone = ZoneInfo(zone_name)
    w = HistoryWriter(tmp_path / "h.sqlite", zone)
    start = datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC) - timedelta(hours=1)
    for i in range(0, 27 * 12):  # every 5 minutes from 23:00 the evening before, 27 hours
        w.add(msg(start + timedelta(minutes=5 * i), 1000 + 25 * i))  # 300 W
    w.close()
    r = HistoryReader(tmp_path / "h.sqlite", zone)
    (d,) = r.energy("house", "day", day, day)
    assert d.end.timestamp() - d.start.timestamp() == hours * 3600  # (aware '-' in one zone is wall time)
    assert d.start.utcoffset() != d.end.utcoffset()
    assert len(r.energy("house", "hour", day, day)) == hours
    quarters = r.energy("house", "quarter", day, day)
    assert len(quarters) == 4 * hours  # 92 / 100
    assert d.deltas["active_energy_import"] == 300 * hours == sum(q.deltas["active_energy_import"] for q in quarters)
    assert all(q.deltas["active_energy_import"] == 75 for q in quarters)
    r.close()
