"""CSV publisher: rows, header, exact values, restart, torn tail, reading-set change, retention."""

from __future__ import annotations

import csv
import signal
import time
from datetime import date
from pathlib import Path

import pytest

from meterpipe.common.values import Reading
from meterpipe.publishers.csv_writer import CsvHandler, CsvStore, repair_tail
from tests.publishers.conftest import T0_NS, Feeder, make_msg, sample_readings, spawn, wait_for, write_config

DAY = "2024-05-01"


def rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def test_header_rows_and_exact_values(tmp_path: Path) -> None:
    store = CsvStore(tmp_path)
    for seq in (1, 2, 3):
        assert store.write(make_msg(seq))
    store.close()
    got = rows(tmp_path / "house" / f"{DAY}.csv")
    assert got[0] == ["time", "meter_id", "logical_device_name", "active_energy_import [kWh]",
                      "active_power_import [W]", "voltage_l1 [V]", "current_l1 [A]"]
    assert got[1] == ["2024-05-01T12:00:01.000Z", "LGZ1030655933512", "LGZ1030655933512",
                      "567890.1", "1235", "230.1", "1.09"]
    assert len(got) == 4
    assert store.rows_written == 3


def test_restart_appends_without_second_header(tmp_path: Path) -> None:
    store = CsvStore(tmp_path)
    store.write(make_msg(1))
    store.close()
    store = CsvStore(tmp_path)
    store.write(make_msg(2))
    store.close()
    got = rows(tmp_path / "house" / f"{DAY}.csv")
    assert [r[0] for r in got] == ["time", "2024-05-01T12:00:01.000Z", "2024-05-01T12:00:02.000Z"]


def test_torn_tail_is_truncated_on_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = CsvStore(tmp_path)
    store.write(make_msg(1))
    store.close()
    path = tmp_path / "house" / f"{DAY}.csv"
    good = path.read_bytes()
    with path.open("ab") as f:
        f.write(b"2024-05-01T12:00:02.000Z,LGZ10306,LGZ")  # crash mid-line
    store = CsvStore(tmp_path)
    store.write(make_msg(3))
    store.close()
    data = path.read_bytes()
    assert data.startswith(good)
    assert data.endswith(b"\n")
    assert [r[0] for r in rows(path)][1:] == ["2024-05-01T12:00:01.000Z", "2024-05-01T12:00:03.000Z"]
    assert "torn line" in caplog.text


def test_repair_tail_on_complete_file_is_noop(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_bytes(b"a,b\n1,2\n")
    assert repair_tail(p) == 0
    p.write_bytes(b"a,b\n1,")
    assert repair_tail(p) == 2
    assert p.read_bytes() == b"a,b\n"


def test_reading_set_change_goes_to_a_file_per_set(tmp_path: Path) -> None:
    store = CsvStore(tmp_path)
    store.write(make_msg(1))
    fewer = make_msg(2, readings=(Reading("1-0:1.8.0", "active_energy_import", 1, 0, "Wh"),))
    store.write(fewer)
    store.write(make_msg(3))  # back to the first set: its own file again (one file per list)
    store.close()
    folder = tmp_path / "house"
    assert sorted(p.name for p in folder.iterdir()) == [f"{DAY}.1.csv", f"{DAY}.csv"]
    assert rows(folder / f"{DAY}.1.csv") == [["time", "meter_id", "active_energy_import [Wh]"],
                                             ["2024-05-01T12:00:02.000Z", "LGZ1030655933512", "1"]]
    assert len(rows(folder / f"{DAY}.csv")) == 3
    # after a restart the file of the day with the same header is appended to
    store = CsvStore(tmp_path)
    store.write(make_msg(4))
    store.close()
    assert len(rows(folder / f"{DAY}.csv")) == 4


def test_day_change_and_text_with_comma(tmp_path: Path) -> None:
    store = CsvStore(tmp_path)
    store.write(make_msg(1, readings=(Reading("0-0:96.13.0", "message", 'a,b "c"'),)))
    store.write(make_msg(1, received_ns=T0_NS + 86_400 * 10**9,
                         readings=(Reading("0-0:96.13.0", "message", "x"),)))
    store.close()
    assert rows(tmp_path / "house" / f"{DAY}.csv")[1][2] == 'a,b "c"'
    assert (tmp_path / "house" / "2024-05-02.csv").exists()


def test_retention_deletes_old_day_files(tmp_path: Path) -> None:
    folder = tmp_path / "house"
    folder.mkdir()
    for name in ("2024-04-01.csv", "2024-04-01.1.csv", "2024-04-29.csv", "2024-05-01.csv", "notes.txt"):
        (folder / name).write_text("x\n")
    store = CsvStore(tmp_path, retention_days=2)
    assert store.expire(date(2024, 5, 1)) == 2
    assert sorted(p.name for p in folder.iterdir()) == ["2024-04-29.csv", "2024-05-01.csv", "notes.txt"]
    handler = CsvHandler(CsvStore(tmp_path, retention_days=1))
    handler.tick(T0_NS / 1e9)
    assert sorted(p.name for p in folder.iterdir()) == ["2024-05-01.csv", "notes.txt"]


def test_unwritable_directory_as_root_via_file_in_the_way(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # a regular file where the directory should be: fails for root too
    target = tmp_path / "csv"
    target.write_text("in the way")
    store = CsvStore(target)
    assert not store.write(make_msg(1))
    assert not store.write(make_msg(2))
    assert store.rows_lost == 0 and store.pending == 2  # rows wait in memory, nothing is lost
    assert caplog.text.count("cannot write CSV") == 1
    target.unlink()
    assert store.write(make_msg(3))
    assert "writing CSV under" in caplog.text
    store.close()
    written = rows(target / "house" / f"{DAY}.csv")
    assert len(written) == 4 and [r[4] for r in written[1:]] == ["1235", "1236", "1237"]  # header + 3 rows in order


def test_sigkill_mid_run_leaves_no_torn_line(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/readings"
    out = tmp_path / "csv"
    config = write_config(tmp_path / "meterpipe.toml", endpoint,
                          f'[publishers.csv]\nenabled = true\ndirectory = "{out}"\n')
    feeder = Feeder(endpoint)
    proc = spawn("meterpipe.publishers.csv_main", config, tmp_path / "csv.log")
    try:
        path = out / "house" / f"{DAY}.csv"
        # wait until the subscriber is connected (PUB drops for late joiners)
        seq = 0

        def first_row() -> bool:
            nonlocal seq
            seq += 1
            feeder.send(make_msg(seq))
            return path.exists() and path.stat().st_size > 200

        wait_for(first_row, 10, "the CSV publisher to write")
        for _ in range(2000):
            seq += 1
            feeder.send(make_msg(seq))
        time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        feeder.close()
    data = path.read_bytes()
    assert data.endswith(b"\n")
    lines = rows(path)
    assert all(len(r) == 7 for r in lines)
    assert len(lines) > 2


def test_main_disabled_exits_0(tmp_path: Path) -> None:
    from meterpipe.publishers.csv_main import main

    config = write_config(tmp_path / "meterpipe.toml", f"ipc://{tmp_path}/readings",
                          "[publishers.csv]\nenabled = false\n")
    assert main(["--config", str(config)]) == 0


def test_main_bad_config_exits_2(tmp_path: Path) -> None:
    from meterpipe.publishers.csv_main import main

    config = write_config(tmp_path / "meterpipe.toml", f"ipc://{tmp_path}/readings",
                          "[publishers.csv]\nenabled = 3\n")
    with pytest.raises(SystemExit) as info:
        main(["--config", str(config)])
    assert info.value.code == 2


def test_main_sigterm_exits_0(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/readings"
    config = write_config(tmp_path / "meterpipe.toml", endpoint,
                          f'[publishers.csv]\ndirectory = "{tmp_path / "csv"}"\n')
    log = tmp_path / "csv.log"
    proc = spawn("meterpipe.publishers.csv_main", config, log)
    try:
        wait_for(lambda: "subscribed to" in log.read_text(), 10, "the subscriber to start")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_meter_alternating_between_two_lists_keeps_one_file_per_list(tmp_path: Path) -> None:
    store = CsvStore(tmp_path)
    short = sample_readings(1)[:2]
    for seq in range(1, 7):
        store.write(make_msg(seq, readings=sample_readings(seq) if seq % 2 else short))
    store.close()
    files = sorted(p.name for p in (tmp_path / "house").iterdir())
    assert files == [f"{DAY}.1.csv", f"{DAY}.csv"]
    assert len(rows(tmp_path / "house" / f"{DAY}.csv")) == 4 and len(rows(tmp_path / "house" / f"{DAY}.1.csv")) == 4
