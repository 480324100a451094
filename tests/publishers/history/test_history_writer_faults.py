"""The writer when things go wrong: a refused first flush, a second writer, damaged blobs, the
transaction helper, and the counters it logs (reviews 4, 5, 6, 21, 22)."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from meterpipe.common.errors import ConfigError
from meterpipe.publishers.history.query import HistoryReader
from meterpipe.publishers.history.store import HistoryWriter
from meterpipe.publishers.history.tables import DatabaseInUseError, transaction
from tests.publishers.history.helpers import T0, ZURICH, msg


def day_import(path: Path) -> list[float]:
    r = HistoryReader(path, ZURICH)
    try:
        return [e.deltas["active_energy_import"] for e in r.energy("house", "day", T0.date(), T0.date())]
    finally:
        r.close()


@pytest.mark.parametrize("refusal", ["full", "aborted"])
def test_a_refused_first_flush_then_a_good_one_writes_the_meter_row(tmp_path: Path, refusal: str) -> None:
    path = tmp_path / "h.sqlite"
    w = HistoryWriter(path, ZURICH)
    pages = w.db.execute("PRAGMA page_count").fetchone()[0]
    pushes = [msg(T0 + timedelta(seconds=5 * i), 1000 + i) for i in range(1200)]
    for m in pushes[:1000]:
        w.add(m)
    if refusal == "full":  # the meter row fits the empty table's page; the minutes do not
        w.db.execute(f"PRAGMA max_page_count={pages}")
        assert not w.flush()
        w.db.execute("PRAGMA max_page_count=1073741823")
    else:  # a statement refused right after the meter's insert
        w.db.execute("CREATE TEMP TRIGGER refuse AFTER UPDATE ON main.meter BEGIN "
                     "SELECT raise(ABORT, 'refused'); END")
        assert not w.flush()
        w.db.execute("DROP TRIGGER refuse")
    assert w.flush()
    cursor = w.cursor()["house"]
    w.db.close()  # killed after the good flush
    w._release()
    r = HistoryReader(path, ZURICH)
    (info,) = r.meters()  # was: no meter row at all (its id cached from the rolled-back insert)
    assert info.name == "house" and info.last_ns == cursor and info.first_ns == pushes[0].received_ns
    r.close()
    w = HistoryWriter(path, ZURICH)
    assert w.cursor() == {"house": cursor}
    for m in pushes:  # the decoder's replay after the restart: nothing counted twice
        w.add(m)
    w.close()
    assert day_import(path) == [1199]


def test_a_second_writer_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    first = HistoryWriter(path, ZURICH)
    with pytest.raises(DatabaseInUseError, match="is in use by another writer .the history process.*: stop it "
                       r"first \(meterpipe stop, or supervisorctl stop history\)") as info:
        HistoryWriter(path, ZURICH)
    assert isinstance(info.value, ConfigError) and info.value.field == "publishers.history.path"
    assert str(path) in info.value.reason
    first.close()
    HistoryWriter(path, ZURICH).close()
    assert (tmp_path / "h.sqlite.lock").exists()


def test_the_lock_goes_with_a_killed_writer_process(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    code = ("import sys, time\nfrom zoneinfo import ZoneInfo\nfrom pathlib import Path\n"
            "from meterpipe.publishers.history.store import HistoryWriter\n"
            f"w = HistoryWriter(Path({str(path)!r}), ZoneInfo('UTC'))\nprint('locked', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
        with pytest.raises(DatabaseInUseError):
            HistoryWriter(path, ZURICH)
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    HistoryWriter(path, ZURICH).close()  # SIGKILL: the kernel dropped the lock


@pytest.mark.parametrize("table", ["minute_block", "quarter"])
def test_a_damaged_blob_is_dropped_and_writing_goes_on(tmp_path: Path, table: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "h.sqlite"
    w = HistoryWriter(path, ZURICH)
    for i in range(20):  # ten minutes of one hour and quarter
        w.add(msg(T0 + timedelta(seconds=30 * i), 1000 + i))
    w.close()
    db = sqlite3.connect(path)
    db.execute(f"UPDATE {table} SET data = x'80'")  # a varint cut short (a torn or foreign page)
    db.commit()
    db.close()
    w = HistoryWriter(path, ZURICH)
    for i in range(20, 40):  # the same hour and quarter again: its stored blob must be read
        w.add(msg(T0 + timedelta(seconds=30 * i), 1000 + i))
    assert not w.flush()  # was: BlobError raised out of flush, a transaction left open (a crash loop)
    assert not w.db.in_transaction
    assert [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()] and \
        any(table in r.getMessage() for r in caplog.records)
    assert w.flush() and w.pending == 0
    w.close()
    r = HistoryReader(path, ZURICH)
    _, rows = r.minutes("house", T0, T0 + timedelta(hours=1))
    assert len(rows) == (10 if table == "minute_block" else 20)  # the new minutes are all there
    r.close()
    # what the dropped row held is lost (the first ten minutes, or the first quarter's 19 Wh)
    assert day_import(path) == [39 if table == "minute_block" else 20]


def test_transaction_rolls_back_and_reraises(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "t.sqlite", isolation_level=None)
    db.execute("CREATE TABLE t (x)")
    with pytest.raises(ZeroDivisionError), transaction(db):
        db.execute("INSERT INTO t VALUES (1)")
        raise ZeroDivisionError
    assert not db.in_transaction and db.execute("SELECT count(*) FROM t").fetchone() == (0,)
    with transaction(db):
        db.execute("INSERT INTO t VALUES (2)")
    assert db.execute("SELECT x FROM t").fetchall() == [(2,)]
    with pytest.raises(sqlite3.OperationalError), transaction(db):
        db.execute("INSERT INTO nope VALUES (1)")
    assert not db.in_transaction
    db.close()


def test_the_counters_are_logged_when_they_move(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from meterpipe.publishers.history.aggregate import Value

    caplog.set_level(logging.INFO)
    w = HistoryWriter(tmp_path / "h.sqlite", ZURICH)
    for i in range(10):
        w.add(msg(T0 + timedelta(seconds=10 * i), 100 + i))
    w.add(msg(T0, 100))  # out of order (a replay boundary)
    w.add(msg(T0 + timedelta(seconds=5), 100))
    w.add_values("house", msg(T0 + timedelta(seconds=200), 0).received_ns, [Value("active_energy_import", "Wh", -5, 0)])
    w.add_values("not a meter!", 1, [])
    w.expire(T0.timestamp())
    lines = [r.getMessage() for r in caplog.records if "since the last report" in r.getMessage()]
    assert lines == ["history since the last report: 1 bad push(es), 1 bad value(s) (negative registers) "
                     "ignored; 2 push(es) skipped as already stored (2 of them out of order); 0 push(es) lost "
                     "their full-resolution copy while the disk refused"]
    w.expire(T0.timestamp())
    w.close()
    assert len([r for r in caplog.records if "since the last report" in r.getMessage()]) == 1  # nothing moved


def test_a_damaged_quarter_does_not_stop_a_zone_change(tmp_path: Path) -> None:
    from zoneinfo import ZoneInfo

    path = tmp_path / "h.sqlite"
    w = HistoryWriter(path, ZURICH)
    for i in range(8):  # two quarters
        w.add(msg(T0 + timedelta(minutes=4 * i), 10 * i))
    w.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE quarter SET data = x'80' WHERE q = (SELECT min(q) FROM quarter)")
    db.commit()
    db.close()
    HistoryWriter(path, ZoneInfo("UTC")).close()  # rebuilds every day: drops the damaged quarter
    r = HistoryReader(path, ZoneInfo("UTC"))
    (day,) = r.energy("house", "day", T0.date() - timedelta(days=1), T0.date())
    assert day.deltas["active_energy_import"] == 40  # the second quarter's (minutes 16..28)
    r.close()
