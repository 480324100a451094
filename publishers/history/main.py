"""``meterpipe-history``: minute, quarter-hour and local-day history of every meter in one SQLite file.

The handler books each push in memory (:meth:`HistoryWriter.add`), flushes once
a minute, a little after each full minute of the wall clock (one transaction: an
SD card sees a write a minute, not a write a push), runs retention once an hour,
and tells the subscriber loop its cursor (the receive time of the last committed
push per meter; 0 for a configured meter the database does not hold yet), so
that after a kill the decoder's replay refills every minute not committed yet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from meterpipe.common.config import Config
from meterpipe.common.schema import ReadingsMessage
from meterpipe.publishers.history.store import HistoryWriter
from meterpipe.publishers.subscriber import Handler, run_publisher

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 60.0
FLUSH_AFTER_S = 2.0  # into each minute: the last pushes of the minute before are in by then
RETENTION_EVERY_S = 3600.0
IDLE_MS = 5000


class HistoryHandler(Handler):
    """Subscriber handler: pushes into the writer, a flush a minute, retention an hour."""

    def __init__(self, writer: HistoryWriter, meters: Sequence[str] = (), *,
                 flush_every_s: float = FLUSH_EVERY_S) -> None:
        self.writer = writer
        self.meters = tuple(meters)
        self.flush_every_s = flush_every_s
        self._next_flush: float | None = None
        self._next_retention: float | None = None

    def on_readings(self, msg: ReadingsMessage) -> None:
        self.writer.add(msg)

    def _after_next_period(self, now: float) -> float:
        return now - now % self.flush_every_s + self.flush_every_s + FLUSH_AFTER_S

    def tick(self, now: float) -> None:
        if self._next_flush is None:
            self._next_flush = self._after_next_period(now)
            self._next_retention = now + RETENTION_EVERY_S
        if now >= self._next_flush:
            self._next_flush = self._after_next_period(now)
            self.writer.flush()
        if self._next_retention is not None and now >= self._next_retention:
            self._next_retention = now + RETENTION_EVERY_S
            self.writer.expire(now)

    def idle_ms(self) -> int:
        """Nothing to do between flushes but wait: wake for pushes, a stop, or every 5 s."""
        return IDLE_MS

    def replay_cursor(self) -> dict[str, int]:
        """The last committed push of each meter; a meter never committed asks for everything."""
        return {**dict.fromkeys(self.meters, 0), **self.writer.cursor()}


def build(config: Config) -> tuple[Handler, Callable[[], None]]:
    cfg = config.publishers.history
    writer = HistoryWriter.from_config(config)
    log.info("history database %s (time zone %s; minute rows kept %s days, every push %s hours): %s",
             cfg.path, config.web.timezone, cfg.minute_retention_days, cfg.recent_hours, writer.summary())
    return HistoryHandler(writer, [m.name for m in config.meters]), writer.close


def main(argv: Sequence[str] | None = None) -> int:
    return run_publisher("meterpipe-history", "Keep the history of meter readings in an SQLite database.",
                         argv, "history", build)


if __name__ == "__main__":
    raise SystemExit(main())
