"""`meterpipe tap`'s readable output (issue 9: `--topic status/` printed nothing without --json)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from meterpipe.common.instances import holder_pid, record_holder, take_lock
from meterpipe.common.process import StopFlag
from meterpipe.common.schema import COUNTERS, Status
from meterpipe.publishers.tap import TapHandler, find_endpoint, format_status

S = 1_000_000_000


def _status(**counters: int) -> Status:
    values = dict.fromkeys(COUNTERS, 0) | {"frame_gaps": 0} | counters
    return Status("house", sent_ns=1_764_630_000 * S, counters=values, last_error="HDLC frame check sequence (FCS) "
                  "mismatch", last_error_kind="checksum", last_push_ns=1_764_629_998 * S)


def test_status_table_shows_flow_errors_and_the_last_error() -> None:
    text = format_status(_status(bytes=12_345, frames_ok=321, pushes_out=80, checksum_errors=2))
    lines = text.splitlines()
    assert lines[0] == "house  status at 23:00:00Z  last push 2 s ago"
    assert lines[1] == "  bytes 12345  frames ok 321  pushes out 80"
    assert lines[2] == "  errors: checksum 2"
    assert lines[3] == "  last error: checksum: HDLC frame check sequence (FCS) mismatch"


def test_status_without_errors_or_pushes() -> None:
    status = Status("flat", sent_ns=0, counters=dict.fromkeys(COUNTERS, 0))
    lines = format_status(status).splitlines()
    assert lines[0].endswith("no push decoded yet")
    assert lines[2:] == ["  errors: none", "  last error: none"]


def test_tap_prints_every_status_message_without_json() -> None:
    out = io.StringIO()
    handler = TapHandler(b"status/", False, out, None, StopFlag())
    handler.on_status(Status("house", sent_ns=0, counters={"frames_ok": 5}))
    assert "frames ok 5" in out.getvalue()


def test_tap_finds_the_demo_when_only_the_demo_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = tmp_path / "rt"
    monkeypatch.setenv("METERPIPE_RUNTIME_DIR", str(runtime))
    monkeypatch.delenv("METERPIPE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert find_endpoint(None, None) == f"ipc://{runtime}/readings"  # nothing runs: the default
    demo_lock = take_lock(runtime / "demo")
    assert demo_lock is not None
    try:
        record_holder(demo_lock, 4242)
        assert holder_pid(runtime / "demo") == 4242
        assert find_endpoint(None, None) == f"ipc://{runtime}/demo/readings"
        main_lock = take_lock(runtime)  # `meterpipe run` as well: it wins
        assert main_lock is not None
        try:
            assert find_endpoint(None, None) == f"ipc://{runtime}/readings"
        finally:
            os.close(main_lock)
    finally:
        os.close(demo_lock)
    assert holder_pid(runtime / "demo") is None


def test_count_stops_after_n_status_messages() -> None:
    out = io.StringIO()
    stop = StopFlag()
    handler = TapHandler(b"status/", False, out, 2, stop)
    handler.on_status(Status("house", sent_ns=0, counters={}))
    assert not stop()
    handler.on_status(Status("house", sent_ns=1, counters={}))
    assert stop()
