"""Per-meter counters and last error, turned into Status messages (sans-IO).

The decoder process records every outcome here; the status is published on
``status/<meter>`` every ``interval_ns`` and whenever the last error changes,
and says so when a meter has gone quiet for three push intervals.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

from meterpipe.common.errors import MeterpipeError
from meterpipe.common.schema import COUNTERS, Status

_ERROR_COUNTER: Final = MappingProxyType({
    "checksum": "checksum_errors",
    "truncated": "truncated_errors",
    "sequence": "sequence_errors",
    "decrypt": "decrypt_errors",
    "auth": "auth_errors",
    "replay": "replay_errors",
    "unsupported": "unsupported",
})
STALE_KIND = "stale"


class MeterStatus:
    def __init__(
        self, meter: str, *, push_interval_ns: int, interval_ns: int = 10_000_000_000, started_ns: int | None = None
    ) -> None:
        self.meter = meter
        self.counters: dict[str, int] = {name: 0 for name in COUNTERS}
        self.counters["frame_gaps"] = 0
        self.last_error: str | None = None
        self.last_error_kind: str | None = None
        self.last_push_ns: int | None = None
        self.last_frame_seq: int | None = None
        self._push_interval_ns = push_interval_ns
        self._interval_ns = interval_ns
        self._next_ns = 0
        self._changed = True
        self._started_ns: int | None = started_ns  # a meter that never sends goes stale too

    def retime(self, push_interval_ns: int) -> None:
        """The meter's push interval changed (the config was re-read): counters stay."""
        self._push_interval_ns = push_interval_ns

    def frame(self, seq: int, size: int, dropped: int, now_ns: int) -> int:
        """Record a frame from the reader; returns frames lost between reader and decoder."""
        if self._started_ns is None:
            self._started_ns = now_ns
        self.counters["bytes"] += size
        self.counters["reader_dropped"] = dropped
        lost = 0
        if self.last_frame_seq is not None and seq > self.last_frame_seq + 1:
            lost = seq - self.last_frame_seq - 1
            self.counters["frame_gaps"] += lost
        self.last_frame_seq = seq
        return lost

    def frames_decoded(self, total: int) -> None:
        """The meter's decoder has passed ``total`` frames through the link layer so far."""
        self.counters["frames_ok"] = total

    def push(self, now_ns: int) -> None:
        self.counters["pushes_out"] += 1
        self.last_push_ns = now_ns
        if self.last_error_kind == STALE_KIND:
            self._set_error(None, None)

    def error(self, exc: MeterpipeError) -> None:
        counter = _ERROR_COUNTER.get(exc.kind, "unsupported")
        self.counters[counter] += 1
        self._set_error(exc.message, exc.kind)  # the kind travels beside it, never inside

    def _set_error(self, text: str | None, kind: str | None) -> None:
        if (text, kind) != (self.last_error, self.last_error_kind):
            self.last_error, self.last_error_kind = text, kind
            self._changed = True

    def due(self, now_ns: int) -> Status | None:
        """The Status to publish now, if one is due."""
        last = self.last_push_ns if self.last_push_ns is not None else self._started_ns
        if last is not None and now_ns - last > 3 * self._push_interval_ns and self.last_error_kind != STALE_KIND:
            seconds = (now_ns - last) // 1_000_000_000
            self._set_error(
                f"no push decoded for {seconds} s: check the meter's cable and its reader",
                STALE_KIND,
            )
        if not self._changed and now_ns < self._next_ns:
            return None
        self._changed = False
        self._next_ns = now_ns + self._interval_ns
        return Status(
            meter=self.meter,
            sent_ns=now_ns,
            counters=dict(self.counters),
            last_error=self.last_error,
            last_error_kind=self.last_error_kind,
            last_push_ns=self.last_push_ns,
        )
