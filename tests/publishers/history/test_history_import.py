"""``meterpipe history import DIR``: the CSV publisher's real files in, the same history out."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from meterpipe.common.values import Push, Reading
from meterpipe.publishers.csv_writer import CsvStore
from meterpipe.publishers.history.cli import main
from meterpipe.publishers.history.query import HistoryReader
from meterpipe.publishers.history.store import HistoryWriter
from tests.publishers.conftest import write_config
from tests.publishers.history.helpers import T0, ZURICH, simulated

WEB = '[web]\nenabled = false\ntimezone = "Europe/Zurich"\n'


def config(tmp_path: Path, db: Path) -> Path:
    return write_config(tmp_path / "meterpipe.toml", f"ipc://{tmp_path}/readings",
                        f'[publishers.history]\nenabled = true\npath = "{db}"\n' + WEB)


def energy(db: Path) -> list[tuple[object, dict[str, float], bool]]:
    r = HistoryReader(db, ZURICH)
    try:
        return [(e.start, e.deltas, e.gap) for e in r.energy("house", "quarter", T0.date(), T0.date() + timedelta(days=2))]
    finally:
        r.close()


def test_import_equals_live_and_runs_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pushes = list(simulated(T0 + timedelta(hours=23), 2 * 3600, 1.0))  # across the UTC and local midnights
    store = CsvStore(tmp_path / "csv")
    for m in pushes:
        assert store.write(m)
    store.close()
    live = tmp_path / "live.sqlite"
    w = HistoryWriter(live, ZURICH)
    for i, m in enumerate(pushes):
        w.add(m)
        if i % 600 == 0:
            w.flush()
    w.close()
    db = tmp_path / "imported.sqlite"
    assert main(["import", str(tmp_path / "csv"), "--config", str(config(tmp_path, db))]) == 0
    out = capsys.readouterr().out
    assert f"house: {len(pushes)} row(s) loaded from 1 file(s), 0 already in the history" in out
    assert energy(db) == energy(live) and len(energy(db)) == 8
    r = HistoryReader(db, ZURICH)
    assert r.meters()[0].meter_id == pushes[0].push.meter_id
    r.close()
    assert main(["import", str(tmp_path / "csv"), "--config", str(config(tmp_path, db))]) == 0
    assert f"house: 0 row(s) loaded from 1 file(s), {len(pushes)} already in the history" in capsys.readouterr().out
    assert energy(db) == energy(live)


def test_bad_files_are_reported_and_skipped_lists_merged_torn_tail_ignored(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from meterpipe.common.schema import ReadingsMessage

    store = CsvStore(tmp_path / "csv")
    for i in range(120):  # a meter alternating between two push lists: two files of the day
        t = T0 + timedelta(hours=12, seconds=10 * i)
        readings = (Reading("1-0:1.8.0", "active_energy_import", 5000 + 3 * i, -3, "kWh"),) if i % 2 else \
            (Reading("1-0:1.7.0", "active_power_import", 100 + i, 0, "W"),)
        store.write(ReadingsMessage("house", i + 1, int(t.timestamp() * 1e9), Push(readings, meter_id="M1")))
    store.close()
    folder = tmp_path / "csv" / "house"
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == ["2026-05-01.1.csv", "2026-05-01.csv"]
    with files[0].open("ab") as f:
        f.write(b"2026-05-01T10:20:00.000Z,M1,12")  # torn: the power went off mid-row
    (folder / "2026-04-29.csv").write_bytes(b"\x00\x01garbage that is no CSV of ours\n")
    (folder / "2026-04-28.csv").write_text("time,meter_id,x [W]\nnot a time,M1,5\n")
    (tmp_path / "csv" / "not a meter!").mkdir()
    db = tmp_path / "h.sqlite"
    assert main(["import", str(tmp_path / "csv"), "--config", str(config(tmp_path, db))]) == 0
    cap = capsys.readouterr()
    assert "skipped" in cap.err and "2026-04-29.csv" in cap.err and "not a meter" in cap.err
    assert "2026-04-28.csv: 1 row(s)" in cap.err
    assert "house: 120 row(s) loaded from 3 file(s)" in cap.out
    (day,) = HistoryReader(db, ZURICH).energy("house", "day", T0.date(), T0.date())
    assert day.deltas["active_energy_import"] == 3 * 2 * 59  # kWh with 3 decimals -> Wh, exact


def test_import_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "h.sqlite"
    assert main(["import", str(tmp_path / "nope"), "--config", str(config(tmp_path, db))]) == 1
    db.write_bytes(b"x" * 4096)
    (tmp_path / "csv").mkdir()
    assert main(["import", str(tmp_path / "csv"), "--config", str(config(tmp_path, db))]) == 2
    assert f"config error: publishers.history.path: {db} is not a meterpipe history database" in capsys.readouterr().err


def test_import_beside_a_running_writer_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = CsvStore(tmp_path / "csv")
    for m in simulated(T0, 30, 1.0):
        store.write(m)
    store.close()
    db = tmp_path / "h.sqlite"
    running = HistoryWriter(db, ZURICH)  # the history process
    try:
        assert main(["import", str(tmp_path / "csv"), "--config", str(config(tmp_path, db))]) == 2
    finally:
        running.close()
    err = capsys.readouterr().err
    assert f"error: the history database {db} is in use by another writer (the history process?): stop it " \
        "first (meterpipe stop, or supervisorctl stop history)" in err
    assert energy(db) == []  # nothing imported, nothing counted twice
    assert main(["import", str(tmp_path / "csv"), "--config", str(config(tmp_path, db))]) == 0
    assert len(energy(db)) == 1


def test_rows_older_than_the_history_are_counted_and_the_way_to_load_them_is_printed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pushes = list(simulated(T0, 3600, 1.0))
    store = CsvStore(tmp_path / "csv")
    for m in pushes[:1800]:  # the CSV publisher ran alone first ...
        store.write(m)
    store.close()
    db = tmp_path / "h.sqlite"
    w = HistoryWriter(db, ZURICH)  # ... then the history process started
    for m in pushes[1800:]:
        w.add(m)
    w.close()
    assert main(["import", str(tmp_path / "csv"), "--config", str(config(tmp_path, db))]) == 0
    out = capsys.readouterr().out
    assert "house: 0 row(s) loaded from 1 file(s), 0 already in the history, 1800 older than the history " \
        "(it starts at 2026-05-01T00:30:00+02:00): not loaded" in out  # was: "1800 already in the history"
    assert f"To load them: stop the pipeline (meterpipe stop), move {db} away, run this import again" in out
