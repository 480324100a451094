"""The demo's history backfill: simulated days through the real decoder and history writer,
joined to the live meter without a register going down (deploy/backfill.py)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from meterpipe.common.config import Config, config_from_dict
from meterpipe.deploy.backfill import STEP_S, BackfillMeter, backfill, plan, store
from meterpipe.publishers.history.query import HistoryReader
from meterpipe.simulator.meter import MeterSimulator
from meterpipe.simulator.state import load_state


def _config(tmp_path: Path) -> Config:
    return config_from_dict({
        "meters": [{"name": "house", "port": "/dev/null", "model": "e450"},
                   {"name": "flat", "port": "/dev/null", "model": "am550"}],
        "endpoints": {"frames": f"ipc://{tmp_path}/frames", "readings": f"ipc://{tmp_path}/readings"},
        "publishers": {"history": {"path": str(tmp_path / "history.sqlite")}},
        "web": {"timezone": "Europe/Zurich"},
    })


def _meters(tmp_path: Path) -> list[BackfillMeter]:
    return [BackfillMeter("house", "e450", tmp_path / "house.json"),
            BackfillMeter("flat", "am550", tmp_path / "flat.json")]


def _energy(reader: HistoryReader, meter: str, start: datetime, end: datetime) -> list[tuple[float, float]]:
    return reader.series(meter, "active_energy_import", start, end, max_points=100_000)


def test_the_stored_registers_end_where_the_live_meter_starts(tmp_path: Path) -> None:
    config = _config(tmp_path)
    now = time.time()
    stored = backfill(config, _meters(tmp_path), 2, now)
    assert stored == 2 * 2 * 86400 // STEP_S
    reader = HistoryReader(config.publishers.history.path, config.web.zone)
    try:
        start = datetime.fromtimestamp(now - 3 * 86400).astimezone()
        end = datetime.fromtimestamp(now + 60).astimezone()
        for meter in ("house", "flat"):
            points = _energy(reader, meter, start, end)
            values = [v for _, v in points]
            assert values == sorted(values), "a register went down"
            state = load_state(tmp_path / f"{meter}.json")
            assert state is not None
            assert points[-1][0] == pytest.approx(state.time, abs=1e-3)
            assert values[-1] == state.registers["ai"]  # both in Wh: the live simulator starts right here
            live = MeterSimulator("e450" if meter == "house" else "am550", start_registers=state.registers)
            first_live = live.push(datetime.fromtimestamp(now + 5).astimezone())
            assert next(v[0] for k, v in first_live.values.items() if k.endswith(":1.8.0")) == values[-1]
        days = reader.energy("house", "day", (start + timedelta(days=1)).date(), end.date())
        assert all(day.deltas["active_energy_import"] > 0 for day in days)
    finally:
        reader.close()


def test_a_second_run_carries_on_and_a_deleted_database_is_filled_again(tmp_path: Path) -> None:
    config = _config(tmp_path)
    meters = _meters(tmp_path)
    now = time.time()
    backfill(config, meters, 1, now - 3600)
    later = plan(config, meters, 1, now)
    assert all(p.start >= now - 3600 for p in later), "the second run must start where the first ended"
    assert abs(store(config, later) - 2 * 3600 // STEP_S) <= 2
    config.publishers.history.path.unlink()
    for suffix in ("-wal", "-shm"):
        Path(str(config.publishers.history.path) + suffix).unlink(missing_ok=True)
    again = plan(config, meters, 1, now)
    assert all(p.registers is None and p.start == now - 86400 for p in again), "a lost database starts afresh"
