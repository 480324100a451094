"""`meterpipe tap`'s readable output (issue 9: `--topic status/` printed nothing without --json)."""

from __future__ import annotations

import io

from meterpipe.common.process import StopFlag
from meterpipe.common.schema import COUNTERS, Status
from meterpipe.publishers.tap import TapHandler, format_status

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
