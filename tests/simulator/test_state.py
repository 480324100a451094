"""A simulated meter carries its registers over a restart (``--state``), so the demo's
backfilled history and the live meter join without a register going down."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from meterpipe.simulator.meter import MeterSimulator
from meterpipe.simulator.state import MeterState, load_state, save_state

T0 = datetime(2026, 6, 1, 8, 0, 0)


def _energy(push_values: dict[str, tuple[int | str, int, str | None]]) -> int:
    value = push_values["1-1:1.8.0"][0] if "1-1:1.8.0" in push_values else push_values["1-0:1.8.0"][0]
    assert isinstance(value, int)
    return value


def test_a_continued_meter_starts_where_the_first_stopped(tmp_path: Path) -> None:
    first = MeterSimulator("am550")
    for minute in range(120):
        first.push(T0 + timedelta(minutes=minute))
    save_state(tmp_path / "s.json", MeterState(first.registers(), (T0 + timedelta(minutes=119)).timestamp()))
    state = load_state(tmp_path / "s.json")
    assert state is not None and state.registers == first.registers()
    second = MeterSimulator("am550", start_registers=state.registers)
    before = first.push(T0 + timedelta(minutes=120))
    after = second.push(T0 + timedelta(minutes=120))
    # the first push of a continuation has no sample before it: its registers are the saved ones
    assert _energy(after.values) == state.registers["ai"] <= _energy(before.values)
    later = second.push(T0 + timedelta(minutes=121))
    assert _energy(later.values) >= _energy(after.values)


def test_missing_state_is_none_and_a_broken_one_is_an_error(tmp_path: Path) -> None:
    assert load_state(tmp_path / "nothing.json") is None
    (tmp_path / "bad.json").write_text('{"registers": {"ai": 1}}')
    with pytest.raises(ValueError, match="not a simulator state file"):
        load_state(tmp_path / "bad.json")


def test_simulate_carries_on_past_a_broken_state_file_and_replaces_it(tmp_path: Path) -> None:
    """A file torn by a power cut must not stop the demo's meter for good: said, then replaced."""
    state = tmp_path / "bad.json"
    state.write_text("[]")
    done = subprocess.run([sys.executable, "-m", "meterpipe.simulator.main", "--model", "am550", "--count", "2",
                           "--interval", "0.1", "--state", str(state), "--link", str(tmp_path / "pty")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "--state" in done.stdout and "not a simulator state file" in done.stdout  # the log goes to stdout
    saved = load_state(state)
    assert saved is not None and saved.registers["ai"] >= MeterSimulator("am550").registers()["ai"]
