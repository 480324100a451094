"""The publisher process: its Handler with real decoded pushes, and ``meterpipe-history`` itself."""

from __future__ import annotations

import signal
import time
from datetime import timedelta
from pathlib import Path

from meterpipe.publishers.history.main import HistoryHandler, main
from meterpipe.publishers.history.query import HistoryReader
from meterpipe.publishers.history.store import HistoryWriter
from tests.publishers.conftest import Feeder, spawn, wait_for, write_config
from tests.publishers.history.helpers import T0, ZURICH, simulated

WEB = '[web]\nenabled = false\ntimezone = "Europe/Zurich"\n'


def register(m: object, name: str) -> int:
    from meterpipe.common.schema import ReadingsMessage

    assert isinstance(m, ReadingsMessage)
    (v,) = [r.value for r in m.push.readings if r.name == name]
    assert isinstance(v, int)
    return v


def test_handler_flushes_a_minute_and_gives_the_cursor(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path / "h.sqlite", ZURICH)
    handler = HistoryHandler(writer, ["house", "flat"])
    pushes = list(simulated(T0, 300, 1.0))
    clock = 960.0  # a full minute of the wall clock: flushes come 2 s after each
    handler.tick(clock)
    for m in pushes[:150]:
        handler.on_readings(m)
    handler.tick(clock + 59)
    # nothing written before the minute is up: every configured meter asks the decoder for everything
    assert handler.replay_cursor() == {"house": 0, "flat": 0}
    handler.tick(clock + 62)
    # minutes 0 and 1 are closed
    assert handler.replay_cursor() == {"house": pushes[119].received_ns, "flat": 0}
    for m in pushes[150:]:
        handler.on_readings(m)
    handler.tick(clock + 123)
    writer.close()
    (day,) = HistoryReader(tmp_path / "h.sqlite", ZURICH).energy("house", "day", T0.date(), T0.date())
    assert day.deltas["active_energy_import"] == \
        register(pushes[-1], "active_energy_import") - register(pushes[0], "active_energy_import")


def test_process_stores_published_pushes_and_exits_2_on_a_foreign_db(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/readings"
    db = tmp_path / "h.sqlite"
    cfg = write_config(tmp_path / "meterpipe.toml", endpoint,
                       f'[publishers.history]\nenabled = true\npath = "{db}"\n' + WEB)
    feeder = Feeder(endpoint)
    log = tmp_path / "history.log"
    proc = spawn("meterpipe.publishers.history.main", cfg, log)
    try:
        # subscribed, and done asking the (absent) decoder to replay what the database lacks
        wait_for(lambda: "replay request" in log.read_text(), 20, "the history process to subscribe")
        pushes = list(simulated(T0, 180, 1.0))
        for m in pushes[:2]:  # the subscription may need a moment: resend until stored
            feeder.send(m)
        time.sleep(0.5)
        for m in pushes:
            feeder.send(m)
        time.sleep(0.5)
    finally:
        stopping = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()
        # it waits up to IDLE_MS between pushes, but a stop signal wakes its poll at once
        assert time.monotonic() - stopping < 3.0, "SIGTERM was not seen until the idle poll ended"
        feeder.close()
    text = log.read_text()
    assert f"history database {db}" in text and "0 meter(s)" in text
    r = HistoryReader(db, ZURICH)
    (day,) = r.energy("house", "day", T0.date(), T0.date())
    assert day.deltas["active_energy_import"] == \
        register(pushes[-1], "active_energy_import") - register(pushes[0], "active_energy_import")
    assert len(r.minutes("house", T0, T0 + timedelta(hours=1))[1]) == 3
    r.close()
    foreign = tmp_path / "foreign.sqlite"
    foreign.write_bytes(b"SQLite format 2\x00" + b"\x00" * 4000)
    cfg2 = write_config(tmp_path / "bad.toml", endpoint,
                        f'[publishers.history]\nenabled = true\npath = "{foreign}"\n' + WEB)
    assert main(["--config", str(cfg2)]) == 2


def test_the_writer_from_config(tmp_path: Path) -> None:
    from meterpipe.common.config import load_config

    db = tmp_path / "h.sqlite"
    cfg = write_config(tmp_path / "meterpipe.toml", f"ipc://{tmp_path}/readings",
                       f'[publishers.history]\nenabled = true\npath = "{db}"\nminute_retention_days = 30\n'
                       f"recent_hours = 6\n" + WEB)
    w = HistoryWriter.from_config(load_config(str(cfg)))
    try:
        assert (w.path, w.zone, w.minute_retention_days, w.recent_hours) == (db, ZURICH, 30, 6)
    finally:
        w.close()
