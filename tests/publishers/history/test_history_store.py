"""The writer through the reader: round trip, restart, kill, a refusing disk, foreign files, zones."""

from __future__ import annotations

import sqlite3
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from meterpipe.common.errors import ConfigError
from meterpipe.publishers.history import store as store_mod
from meterpipe.publishers.history.query import HistoryReader
from meterpipe.publishers.history.store import HistoryWriter
from tests.publishers.history.helpers import T0, ZURICH, kill, msg, ns, simulated

DAY = T0.date()


def day_import(path: Path, first: date = DAY, last: date = DAY, zone: ZoneInfo = ZURICH) -> list[float]:
    reader = HistoryReader(path, zone)
    try:
        return [r.deltas["active_energy_import"] for r in reader.energy("house", "day", first, last)]
    finally:
        reader.close()


def test_round_trip_through_the_reader(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    w = HistoryWriter(path, ZURICH)
    pushes = list(simulated(T0, 3 * 3600, 1.0))  # three hours at 1 push/s
    for i, m in enumerate(pushes):
        w.add(m)
        if i % 60 == 0:
            assert w.flush()
    assert w.flush()
    assert w.cursor()["house"] == pushes[-61].received_ns  # the last push of the last closed minute
    w.close()
    assert w.cursor() == {"house": pushes[-1].received_ns}
    r = HistoryReader(path, ZURICH)
    (info,) = r.meters()
    assert (info.name, info.meter_id, info.first_ns, info.last_ns) == \
        ("house", pushes[0].push.meter_id, pushes[0].received_ns, pushes[-1].received_ns)
    kinds = {q.name: (q.unit, q.kind) for q in r.quantities("house")}
    assert kinds["active_energy_import"] == ("Wh", "register") and kinds["current_l1"] == ("A", "gauge")
    assert len(kinds) == 12  # 13 numbers of the E450 list less the two texts... the clock is not a reading

    def reg(m: object, name: str) -> int:
        from meterpipe.common.schema import ReadingsMessage

        assert isinstance(m, ReadingsMessage)
        (v,) = [x.value for x in m.push.readings if x.name == name]
        assert isinstance(v, int)
        return v

    want = reg(pushes[-1], "active_energy_import") - reg(pushes[0], "active_energy_import")
    (day,) = r.energy("house", "day", DAY, DAY)
    assert day.deltas["active_energy_import"] == want and not day.gap
    assert day.start == T0 and day.end == T0 + timedelta(days=1)
    hours = r.energy("house", "hour", DAY, DAY)
    assert len(hours) == 3 and sum(h.deltas["active_energy_import"] for h in hours) == want
    quarters = r.energy("house", "quarter", DAY, DAY)
    assert len(quarters) == 12 and quarters[1].start == T0 + timedelta(minutes=15)
    (peak,) = r.peaks("house", "day", DAY, DAY)
    top = max(quarters, key=lambda q: q.deltas["active_energy_import"])
    assert peak.start == top.start and peak.mean_w == top.deltas["active_energy_import"] * 4
    (month,) = r.energy("house", "month", DAY, date(2026, 5, 31))
    assert month.deltas == day.deltas and r.energy("house", "year", DAY, DAY)[0].deltas == day.deltas
    # every push within the recent window, exact values
    series = r.series("house", "voltage_l1", T0, T0 + timedelta(minutes=1), max_points=1000)
    assert [v for _, v in series] == [float(reg(m, "voltage_l1")) for m in pushes[:61]]
    assert len(r.series("house", "voltage_l1", T0, T0 + timedelta(hours=3), max_points=100)) <= 100
    header, rows = r.minutes("house", T0, T0 + timedelta(minutes=2))
    assert header[:4] == ["start", "active_power_import_mean", "active_power_import_min", "active_power_import_max"]
    assert rows[0][0] == "2026-05-01T00:00:00+02:00" and len(rows) == 2
    col = header.index("active_energy_import")
    assert rows[0][col] == reg(pushes[59], "active_energy_import")
    r.close()


def test_minute_series_before_the_recent_window(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    w = HistoryWriter(path, ZURICH, recent_hours=1)
    for i in range(3 * 60 * 6):  # 3 h, a push every 10 s
        w.add(msg(T0 + timedelta(seconds=10 * i), 1000 + i, power_w=100 + i % 6))
    w.close()
    r = HistoryReader(path, ZURICH)
    points = r.series("house", "active_power_import", T0, T0 + timedelta(hours=3))
    minute_points = [p for p in points if p[0] < ns(T0 + timedelta(hours=2)) / 1e9 - 60]
    assert minute_points and all(v == 102.5 for _, v in minute_points)  # means of 100..105
    assert len(points) == len(minute_points) + (len(points) - len(minute_points))
    assert points[-1] == (ns(T0 + timedelta(seconds=10 * (3 * 360 - 1))) / 1e9, 105.0)
    r.close()


def test_restart_continues_the_deltas(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    pushes = [msg(T0 + timedelta(seconds=20 * i), 10_000 + 7 * i) for i in range(200)]
    w = HistoryWriter(path, ZURICH)
    for m in pushes[:100]:
        w.add(m)
    w.close()  # writes the open minute too
    w = HistoryWriter(path, ZURICH)
    for m in pushes[50:]:  # a replay that overlaps: the committed ones are skipped
        w.add(m)
    assert w.skipped == 50
    w.close()
    assert day_import(path) == [7 * 199]


def test_a_kill_loses_no_minute_once_the_replay_refills(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    pushes = [msg(T0 + timedelta(seconds=7 * i), 50_000 + 3 * i) for i in range(500)]
    w = HistoryWriter(path, ZURICH)
    for m in pushes[:300]:
        w.add(m)
    assert w.flush()
    cursor = w.cursor()["house"]
    assert cursor < pushes[299].received_ns  # the open minute is not committed
    kill(w)  # killed: no close(), the open minute is gone from memory
    w = HistoryWriter(path, ZURICH)
    assert w.cursor() == {"house": cursor}
    for m in pushes:  # the decoder replays what is after the cursor (here: everything again)
        w.add(m)
    w.close()
    assert day_import(path) == [3 * 499]
    r = HistoryReader(path, ZURICH)
    _, rows = r.minutes("house", T0, T0 + timedelta(hours=1))
    assert len(rows) == len({(m.received_ns // 60_000_000_000) for m in pushes})
    r.close()


def test_clean_close_then_more_pushes_of_the_same_minute_merge(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    w = HistoryWriter(path, ZURICH)
    w.add(msg(T0 + timedelta(seconds=1), 100, power_w=100))
    w.close()
    w = HistoryWriter(path, ZURICH)
    w.add(msg(T0 + timedelta(seconds=30), 105, power_w=300))
    w.close()
    r = HistoryReader(path, ZURICH)
    header, rows = r.minutes("house", T0, T0 + timedelta(minutes=1))
    i = header.index("active_power_import_mean")
    assert rows == [[rows[0][0], *rows[0][1:]]] and rows[0][i:i + 3] == [200.0, 100.0, 300.0]
    assert day_import(path) == [5]
    r.close()


@pytest.mark.parametrize("refusal", ["full", "readonly"])
def test_a_refusing_disk_keeps_the_rows_and_writes_them_later(tmp_path: Path, refusal: str,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "h.sqlite"
    w = HistoryWriter(path, ZURICH)
    pushes = [msg(T0 + timedelta(seconds=5 * i), 1000 + i) for i in range(2000)]
    for m in pushes[:100]:
        w.add(m)
    assert w.flush()
    pages = w.db.execute("PRAGMA page_count").fetchone()[0]
    # SQLite's own refusals: SQLITE_FULL when the file may not grow, SQLITE_READONLY
    w.db.execute(f"PRAGMA max_page_count={pages}" if refusal == "full" else "PRAGMA query_only=1")
    for m in pushes[100:1900]:
        w.add(m)
    assert not w.flush() and not w.flush()
    assert w.pending > 100
    errors = [r for r in caplog.records if "cannot write the history database" in r.getMessage()]
    assert len(errors) == 1  # logged once
    w.db.execute("PRAGMA max_page_count=1073741823" if refusal == "full" else "PRAGMA query_only=0")
    for m in pushes[1900:]:
        w.add(m)
    assert w.flush() and w.pending == 0
    w.close()
    assert day_import(path) == [1999] and w.minutes_lost == 0


def test_memory_is_bounded_but_no_energy_is_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "MAX_PENDING_MINUTES", 30)
    monkeypatch.setattr(store_mod, "MAX_PENDING_SAMPLES", 50)
    path = tmp_path / "h.sqlite"
    w = HistoryWriter(path, ZURICH)
    w.db.execute("PRAGMA query_only=1")
    for i in range(200):
        w.add(msg(T0 + timedelta(seconds=30 * i), 1000 + 2 * i))
        assert w.flush() is (i < 2)  # nothing closed to write before the third push
    assert w.pending <= 31 and w.minutes_lost > 0 and w.samples_dropped > 0
    w.db.execute("PRAGMA query_only=0")
    w.close()
    assert day_import(path) == [2 * 199]


def test_foreign_and_corrupt_files_are_config_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not SQLite at all" * 100)
    with pytest.raises(ConfigError, match=f"{junk} is not a meterpipe history database"):
        HistoryWriter(junk, ZURICH)
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="another application's SQLite file") as info:
        HistoryWriter(other, ZURICH)
    assert info.value.field == "publishers.history.path"
    with pytest.raises(sqlite3.DatabaseError, match=f"{other} is not a meterpipe history database"):
        HistoryReader(other, ZURICH).meters()  # the web answers 503 naming it, not empty charts


def test_missing_database_gives_empty_answers_then_sees_it(tmp_path: Path) -> None:
    path = tmp_path / "later.sqlite"
    r = HistoryReader(path, ZURICH)
    t = datetime(2026, 5, 1, tzinfo=ZURICH)
    assert r.meters() == [] and r.quantities("house") == [] and r.energy("house", "day", DAY, DAY) == []
    assert r.peaks("house", "month", DAY, DAY) == [] and r.series("house", "x", t, t) == []
    assert r.minutes("house", t, t) == (["start"], [])
    w = HistoryWriter(path, ZURICH)
    w.add(msg(T0, 1))
    w.close()
    assert [m.name for m in r.meters()] == ["house"]
    with pytest.raises(ValueError, match="step"):
        r.energy("house", "week", DAY, DAY)
    r.close()


def test_a_zone_change_rebuilds_the_days(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    w = HistoryWriter(path, ZURICH)
    for i in range(48 * 4):  # two Zurich days (from 22:00 UTC), a push per quarter, 10 Wh each
        w.add(msg(T0 + timedelta(minutes=15 * i), 10 * i))
    w.close()
    assert day_import(path, DAY, DAY + timedelta(days=1)) == [950, 960]
    utc = ZoneInfo("UTC")
    assert day_import(path, DAY, DAY + timedelta(days=1), utc) == [960, 880]  # from quarters: day rows are Zurich's
    HistoryWriter(path, utc).close()  # the writer rebuilds them in the new zone
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key = 'day_zone'").fetchone() == ("UTC",)
    db.close()
    assert day_import(path, date(2026, 4, 30), DAY + timedelta(days=1), utc) == [70, 960, 880]


def test_retention_drops_minutes_and_pushes_but_keeps_energy(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    w = HistoryWriter(path, ZURICH, minute_retention_days=1, recent_hours=2)
    for i in range(3 * 24 * 12):  # three days, every 5 minutes
        w.add(msg(T0 + timedelta(minutes=5 * i), 4 * i))
    w.close()
    r = HistoryReader(path, ZURICH)
    _, rows = r.minutes("house", T0, T0 + timedelta(days=3))
    assert 12 * 24 <= len(rows) <= 12 * 26  # a day (and the hour being written)
    assert [e.deltas["active_energy_import"] for e in r.energy("house", "day", DAY, DAY + timedelta(days=2))] == \
        [4 * 287, 4 * 288, 4 * 288]
    db = sqlite3.connect(path)
    oldest = db.execute("SELECT min(t0) FROM push_chunk").fetchone()[0]
    assert oldest >= ns(T0 + timedelta(days=3) - timedelta(hours=2, minutes=10))
    db.close()
    r.close()


def test_retention_runs_per_meter_when_meters_are_written_one_after_another(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    w = HistoryWriter(path, ZURICH, recent_hours=1)
    for meter in ("a", "b"):  # as an import or a backfill does: all of a, then all of b
        for i in range(6 * 12):  # six hours, every 5 minutes
            w.add(msg(T0 + timedelta(minutes=5 * i), 4 * i, meter=meter))
            if i % 12 == 11:
                w.flush()
    w.close()
    db = sqlite3.connect(path)
    oldest = dict(db.execute("SELECT meter, min(t0) FROM push_chunk GROUP BY meter").fetchall())
    db.close()
    assert len(oldest) == 2 and all(t >= ns(T0 + timedelta(hours=4)) for t in oldest.values())
