"""The read side: which SQLite errors mean "no data yet" (review 7), no connection left open on a
file that is not ours, and days summed from quarters by the same rule as the writer's (review 19)."""

from __future__ import annotations

import sqlite3
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from meterpipe.publishers.history import tables
from meterpipe.publishers.history.query import HistoryReader
from meterpipe.publishers.history.store import HistoryWriter
from meterpipe.publishers.history.tables import APPLICATION_ID
from tests.publishers.history.helpers import T0, ZURICH, msg

UTC = ZoneInfo("UTC")


def ours(path: Path, ddl: str) -> None:
    """A file with our application id and the given tables (a partly built or damaged database)."""
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA application_id={APPLICATION_ID}")
    db.executescript(ddl)
    db.commit()
    db.close()


def test_a_missing_table_is_empty_but_other_errors_surface(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    ours(path, "CREATE TABLE day (meter, day, gap, data, peak_q, peak_mwh);")  # no meter table yet
    r = HistoryReader(path, ZURICH)
    assert r.meters() == [] and r.energy("house", "day", T0.date(), T0.date()) == []
    r.close()
    broken = tmp_path / "broken.sqlite"
    ours(broken, "CREATE TABLE day (meter, day, gap, data, peak_q, peak_mwh); CREATE TABLE meter (id, name);")
    r = HistoryReader(broken, ZURICH)
    with pytest.raises(sqlite3.OperationalError, match="no such column"):  # was: [] (the web showed "no data")
        r.meters()
    r.close()


def test_open_for_reading_closes_what_it_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[sqlite3.Connection] = []
    real = sqlite3.connect

    def connect(*args: object, **kwargs: object) -> sqlite3.Connection:
        db = real(*args, **kwargs)  # type: ignore[call-overload]
        opened.append(db)
        return db

    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all " * 200)
    other = tmp_path / "other.sqlite"
    ours(other, "CREATE TABLE meter (id);")  # ours, but no day table
    monkeypatch.setattr(tables.sqlite3, "connect", connect)  # the real connections, recorded
    with pytest.raises(sqlite3.DatabaseError):  # damaged: not "no data"
        tables.open_for_reading(junk)
    assert tables.open_for_reading(other) is None  # ours, still being created
    assert len(opened) == 2
    for db in opened:  # was: the connection to junk left open (its fd kept until collected)
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            db.execute("SELECT 1")


def test_days_from_quarters_are_the_days_the_writer_builds(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    w = HistoryWriter(path, ZURICH)
    value = 0
    for i in range(3 * 24 * 12):  # three days every 5 minutes, a daily load peak, a gap on the second day
        t = T0 + timedelta(minutes=5 * i)
        if 300 <= i < 310:
            continue
        value += 1 + (40 if i % 288 == 100 + 3 * (i // 288) else 0)
        w.add(msg(t, value))
    w.close()
    first, last = date(2026, 4, 30), date(2026, 5, 4)
    r = HistoryReader(path, UTC)  # the day rows are Zurich's: the reader sums the quarters itself
    from_quarters = (r.energy("house", "day", first, last), r.peaks("house", "day", first, last),
                     r.peaks("house", "month", first, last))
    r.close()
    HistoryWriter(path, UTC).close()  # now the writer builds the UTC day rows
    r = HistoryReader(path, UTC)
    from_rows = (r.energy("house", "day", first, last), r.peaks("house", "day", first, last),
                 r.peaks("house", "month", first, last))
    r.close()
    assert from_quarters == from_rows
    days, peaks, _ = from_rows
    assert len(days) == 4 and [d.gap for d in days] == [False, True, False, False]
    assert sorted(p.mean_w for p in peaks) == [12, 172, 172, 172]  # 3 pushes a quarter, one 41 Wh step
