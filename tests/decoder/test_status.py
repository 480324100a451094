"""Per-meter status: counters, last error, and a meter that goes quiet."""

from __future__ import annotations

from meterpipe.common.errors import ChecksumError
from meterpipe.decoder.status import MeterStatus

S = 1_000_000_000


def test_status_is_sent_on_change_and_every_interval() -> None:
    st = MeterStatus("house", push_interval_ns=5 * S, interval_ns=10 * S, started_ns=0)
    first = st.due(0)
    assert first is not None and first.last_error is None
    assert st.due(1 * S) is None  # nothing changed, interval not over
    st.frame(seq=1, size=100, dropped=0, now_ns=1 * S)
    st.error(ChecksumError("HDLC frame check sequence (FCS) mismatch"))
    changed = st.due(2 * S)
    assert changed is not None and changed.last_error_kind == "checksum"
    assert changed.counters["checksum_errors"] == 1 and changed.counters["bytes"] == 100
    assert st.due(3 * S) is None
    assert st.due(12 * S) is not None  # periodic


def test_frame_gaps_between_reader_and_decoder_are_counted() -> None:
    st = MeterStatus("house", push_interval_ns=S, started_ns=0)
    st.frame(1, 10, 0, 0)
    assert st.frame(5, 10, 2, 0) == 3
    assert st.counters["frame_gaps"] == 3 and st.counters["reader_dropped"] == 2


def test_a_meter_that_never_sends_or_stops_sending_is_reported_stale() -> None:
    st = MeterStatus("house", push_interval_ns=5 * S, started_ns=0)
    quiet = st.due(16 * S)
    assert quiet is not None and quiet.last_error_kind == "stale" and "16 s" in (quiet.last_error or "")
    st.push(17 * S)
    back = st.due(17 * S)
    assert back is not None and back.last_error is None
    later = st.due(40 * S)
    assert later is not None and later.last_error_kind == "stale"


def test_last_error_holds_the_message_and_the_kind_travels_beside_it() -> None:
    """A consumer that shows "<kind>: <message>" never doubles the kind (issue 9: "stale: stale: ...")."""
    st = MeterStatus("house", push_interval_ns=5 * S, started_ns=0)
    quiet = st.due(16 * S)
    assert quiet is not None and quiet.last_error_kind == "stale"
    assert quiet.last_error is not None and not quiet.last_error.startswith("stale")
    st.push(17 * S)
    st.error(ChecksumError("HDLC frame check sequence (FCS) mismatch"))
    bad = st.due(17 * S)
    assert bad is not None and bad.last_error == "HDLC frame check sequence (FCS) mismatch"
    assert bad.last_error_kind == "checksum"
