"""The history writer: pushes in, one SQLite transaction per flush out.

:meth:`HistoryWriter.add` books each push into its meter's
:class:`~meterpipe.publishers.history.aggregate.MeterAggregator` (memory only).
:meth:`HistoryWriter.flush` (the publisher calls it once a minute) writes every
*closed* minute in one transaction: the minute blocks, the pushes of the recent
window, the quarter deltas, the local days they touch (recomputed from their
quarters) and each meter's register state and cursor (the receive time of its
last committed push). The open minute stays in memory, so after a kill the
decoder's replay (pushes after the cursor) refills exactly what was lost; a
clean :meth:`close` writes the open minute too, and later pushes of that minute
merge into its row.

A disk that refuses (full, read-only, I/O error): the transaction is rolled
back, the minutes wait in memory in order, the error is logged once and the
next flush retries. Memory is bounded: beyond :data:`MAX_PENDING_SAMPLES`
pushes the oldest waiting pushes lose their full-resolution copy, beyond
:data:`MAX_PENDING_MINUTES` the oldest minutes lose their gauges
(``minutes_lost``); their energy deltas are kept whatever happens (a few bytes
per quarter), so no Wh is ever lost. A stored blob that cannot be decoded
(:class:`~meterpipe.publishers.history.tables.DamagedRow`) rolls the flush back
too; that row is logged and dropped, and the next flush goes through.

New meter and quantity ids are cached only after COMMIT. The writer holds an
exclusive advisory lock beside the database for its lifetime (one writer).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

from meterpipe.common.config import Config
from meterpipe.common.errors import SchemaError
from meterpipe.common.schema import ReadingsMessage, check_meter_name
from meterpipe.publishers.history.aggregate import (
    MeterAggregator,
    Minute,
    RegisterState,
    Value,
    add_into,
    day_of_quarter,
    values_of,
)
from meterpipe.publishers.history.codec import BlobError, MinuteCells, encode_block
from meterpipe.publishers.history.days import ensure_day_zone, rebuild_day
from meterpipe.publishers.history.rows import (
    Staged,
    add_quarter,
    merge_minute,
    state_from_json,
    state_to_json,
    stored_block,
    write_samples,
)
from meterpipe.publishers.history.tables import (
    DamagedRow,
    block_id,
    open_for_writing,
    take_writer_lock,
    transaction,
)

log = logging.getLogger(__name__)

MAX_PENDING_MINUTES = 20_000  # minutes waiting for a refusing disk (two weeks of one meter)
MAX_PENDING_SAMPLES = 10_000  # pushes kept at full resolution meanwhile (under 3 h of one meter at 1 s)


class HistoryWriter:
    """The one writer of a history database (see the module docstring). It holds an exclusive
    advisory lock (``<db>.lock``) for its lifetime: a second writer (an import beside the running
    history process) gets :class:`~meterpipe.publishers.history.tables.DatabaseInUseError`."""

    def __init__(self, path: Path, zone: ZoneInfo, *, minute_retention_days: int = 400,
                 recent_hours: int = 48) -> None:
        self.path = path
        self.zone = zone
        self.minute_retention_days = minute_retention_days
        self.recent_hours = recent_hours
        self._lock: int | None = take_writer_lock(path)
        try:
            self.db = open_for_writing(path)
        except BaseException:
            self._release()
            raise
        self._meters: dict[str, int] = {}
        self._states: dict[str, RegisterState] = {}
        self._cursor: dict[str, int] = {}
        self._first: dict[str, int] = {}  # meter -> receive ns of its first stored push
        for mid, name, first_ns, last_ns, state in self.db.execute(
                "SELECT id, name, first_ns, last_ns, state FROM meter"):
            self._meters[name] = mid
            if last_ns is not None:
                self._cursor[name] = last_ns
            if first_ns is not None:
                self._first[name] = first_ns
            self._states[name] = state_from_json(state, last_ns)
        self._qids: dict[tuple[int, str], int] = {
            (m, n): q for q, m, n in self.db.execute("SELECT id, meter, name FROM quantity")}
        self._aggs: dict[str, MeterAggregator] = {}
        self._pending: deque[tuple[str, Minute]] = deque()
        self._pending_samples = 0
        self._orphans: dict[tuple[str, int], tuple[bool, dict[str, int]]] = {}  # (meter, q) -> gap, deltas
        self._failing = False
        self._retention_hour: dict[int, int] = {}  # meter id -> data hour of its last retention pass
        self.pushes = 0
        self.skipped = 0  # at or before the cursor (replayed twice, imported twice)
        self.bad = 0
        self.minutes_lost = 0
        self.samples_dropped = 0
        self._reported: tuple[int, ...] = (0, 0, 0, 0, 0)
        try:
            self._check_day_zone()
        except BaseException:
            self.db.close()
            self._release()
            raise

    @classmethod
    def from_config(cls, config: Config) -> HistoryWriter:
        """The writer of ``[publishers.history]`` with the ``[web] timezone`` days."""
        cfg = config.publishers.history
        return cls(cfg.path, config.web.zone, minute_retention_days=cfg.minute_retention_days,
                   recent_hours=cfg.recent_hours)

    # --- taking pushes in ---------------------------------------------------------------

    def add(self, msg: ReadingsMessage) -> None:
        """Book one push (memory only); a bad one is counted, never raised."""
        try:
            values = values_of(msg.push.readings)
        except (TypeError, ValueError):
            self.bad += 1
            return
        self.add_values(msg.meter, msg.received_ns, values, msg.push.meter_id)

    def add_values(self, meter: str, received_ns: int, values: Iterable[Value],
                   meter_id: str | None = None) -> bool:
        """Book one push given as values (the CSV importer); False when skipped."""
        try:
            check_meter_name(meter)
        except SchemaError:
            self.bad += 1
            return False
        if received_ns <= self._cursor.get(meter, -1):
            self.skipped += 1
            return False
        agg = self._aggs.get(meter)
        if agg is None:
            agg = self._aggs[meter] = MeterAggregator(self._states.get(meter))
        if not agg.add(received_ns, values, meter_id):
            self.skipped += 1
            return False
        self.pushes += 1
        return True

    def cursor(self) -> dict[str, int]:
        """Per meter, the receive time (ns) of the last committed push."""
        return dict(self._cursor)

    def first_stored(self, meter: str) -> int | None:
        """The receive time (ns) of the meter's first committed push (None: none yet)."""
        return self._first.get(meter)

    @property
    def pending(self) -> int:
        """Minutes waiting to be written."""
        return len(self._pending)

    # --- writing ----------------------------------------------------------------------------

    def flush(self, *, everything: bool = False) -> bool:
        """Write every closed minute (with ``everything`` the open ones too) in one transaction;
        False when the disk refused (the minutes wait in memory)."""
        for meter, agg in self._aggs.items():
            for m in agg.take_all() if everything else agg.take_closed():
                self._pending.append((meter, m))
                self._pending_samples += len(m.samples)
        self._bound()
        if not self._pending and not self._orphans:
            return True
        minutes = list(self._pending)
        staged = Staged()
        try:
            with transaction(self.db):
                self._write(minutes, staged)
        except DamagedRow as exc:  # rolled back; drop the row so that the next flush goes through
            self._drop_damaged(exc)
            return False
        except (sqlite3.Error, BlobError) as exc:
            if not self._failing:
                self._failing = True
                log.error("cannot write the history database %s: %s; %s minute(s) wait in memory (up to %s) "
                          "and writing is retried with every flush", self.path, exc, len(minutes),
                          MAX_PENDING_MINUTES)
            return False
        self._qids.update(staged.qids)  # only now: a rolled-back insert is redone next time
        self._meters.update(staged.meters)
        self._retention_hour.update(staged.retention_hours)
        for meter, m in minutes:
            self._cursor[meter] = m.end_ns
            self._states[meter] = m.state
            self._first.setdefault(meter, m.first_ns or m.end_ns)
        self._pending.clear()
        self._pending_samples = 0
        self._orphans.clear()
        if self._failing:
            self._failing = False
            log.warning("writing the history database %s again (%s minute(s) lost meanwhile)", self.path,
                        self.minutes_lost)
        return True

    def _bound(self) -> None:
        for _, m in self._pending:
            if self._pending_samples <= MAX_PENDING_SAMPLES:
                break
            if m.samples:
                self._pending_samples -= len(m.samples)
                self.samples_dropped += len(m.samples)
                m.samples = []
        while len(self._pending) > MAX_PENDING_MINUTES:
            meter, m = self._pending.popleft()
            self._pending_samples -= len(m.samples)
            gap, deltas = self._orphans.get((meter, m.quarter), (False, {}))
            add_into(deltas, m.deltas)
            self._orphans[(meter, m.quarter)] = (gap or m.gap, deltas)
            self.minutes_lost += 1
            nxt = next((x for mt, x in self._pending if mt == meter), None)
            if nxt is None:  # the meter's state must still move on: keep its last minute as a shell
                self._pending.appendleft((meter, Minute(m.minute, state=m.state)))
                break

    def _drop_damaged(self, exc: DamagedRow) -> bool:
        log.error("history database %s: %s; the row is dropped (its minutes or energy are lost) and "
                  "writing goes on with the next flush", self.path, exc)
        try:
            with transaction(self.db):
                self.db.execute(f"DELETE FROM {exc.table} WHERE {exc.where}", exc.key)
        except sqlite3.Error as err:
            log.error("cannot drop the damaged row from %s: %s", self.path, err)
            return False
        return True

    def _write(self, minutes: Sequence[tuple[str, Minute]], staged: Staged) -> None:
        db = self.db
        new_qids = staged.qids

        def qid(mid: int, name: str, unit: str | None, kind: str) -> int:
            key = (mid, name)
            q = self._qids.get(key) or new_qids.get(key)
            if q is None:
                cur = db.execute("INSERT INTO quantity (meter, name, unit, kind) VALUES (?, ?, ?, ?)",
                                 (mid, name, unit, kind))
                q = new_qids[key] = int(cur.lastrowid or 0)
            return q

        blocks: dict[tuple[int, int], dict[int, MinuteCells]] = {}
        quarters: dict[tuple[int, int], tuple[bool, dict[str, int]]] = {}
        last: dict[str, Minute] = {}
        first: dict[str, int] = {}
        newest: dict[int, int] = {}  # meter id -> receive time of its newest push in this flush
        for meter, m in minutes:
            mid = self._meter_row(meter, m, staged)
            last[meter] = m
            first.setdefault(meter, m.first_ns or m.end_ns)
            newest[mid] = max(newest.get(mid, 0), m.end_ns)
            if m.gauges or m.registers:
                cells = MinuteCells(
                    {qid(mid, n, m.units.get(n), "gauge"): c for n, c in m.gauges.items()},
                    {qid(mid, n, m.units.get(n), "register"): v for n, v in m.registers.items()})
                hour = m.minute // 60
                block = blocks.get((mid, hour))
                if block is None:
                    block = blocks[(mid, hour)] = stored_block(db, block_id(mid, hour))
                merge_minute(block, m.minute % 60, cells)
            write_samples(db, mid, m, qid)
            if m.pushes:
                gap, deltas = quarters.get((mid, m.quarter), (False, {}))
                add_into(deltas, m.deltas)
                quarters[(mid, m.quarter)] = (gap or m.gap, deltas)
        for (meter, q), (gap, deltas) in self._orphans.items():
            mid = self._meter_row(meter, None, staged)
            old_gap, old = quarters.get((mid, q), (False, {}))
            add_into(old, deltas)
            quarters[(mid, q)] = (old_gap or gap, old)
        for (mid, hour), block in blocks.items():
            db.execute("INSERT OR REPLACE INTO minute_block VALUES (?, ?)", (block_id(mid, hour), encode_block(block)))
        days: set[tuple[int, int]] = set()
        for (mid, q), (gap, deltas) in quarters.items():
            add_quarter(db, mid, q, gap, deltas, qid)
            days.add((mid, day_of_quarter(q, self.zone).toordinal()))
        for mid, d in sorted(days):
            rebuild_day(db, self.zone, mid, d)
        for meter, m in last.items():
            db.execute("UPDATE meter SET last_ns = ?, state = ?, first_ns = coalesce(first_ns, ?) WHERE id = ?",
                       (m.end_ns, state_to_json(m.state), first[meter], self._meter_row(meter, None, staged)))
        for mid, t_ns in newest.items():  # by data time, per meter: imports and backfills expire too
            hour = t_ns // 3_600_000_000_000
            if hour > self._retention_hour.get(mid, 0):
                staged.retention_hours[mid] = hour
                self._expire(t_ns / 1e9, [mid])

    def _meter_row(self, meter: str, m: Minute | None, staged: Staged) -> int:
        mid = self._meters.get(meter) or staged.meters.get(meter)
        if mid is None:
            cur = self.db.execute("INSERT INTO meter (name) VALUES (?)", (meter,))
            mid = staged.meters[meter] = int(cur.lastrowid or 0)  # cached once committed
        if m is not None and m.meter_id is not None:
            self.db.execute("UPDATE meter SET meter_id = ? WHERE id = ?", (m.meter_id, mid))
        return mid

    def _check_day_zone(self) -> None:
        while True:
            try:
                rebuilt = ensure_day_zone(self.db, self.zone)
                break
            except DamagedRow as exc:  # rolled back: drop it and rebuild again (a row fewer each time)
                if not self._drop_damaged(exc):
                    raise
        if rebuilt is not None:
            log.info("history: time zone changed from %s to %s: %s local day(s) rebuilt from the quarters",
                     rebuilt[0], self.zone.key, rebuilt[1])

    # --- retention, close, summary ------------------------------------------------------------

    def expire(self, now_s: float) -> bool:
        """Delete minute rows and full-resolution pushes past their retention (and log the counters
        that moved since the last time); False if refused."""
        self.log_counters()
        try:
            with transaction(self.db):
                self._expire(now_s)
        except sqlite3.Error as exc:
            log.warning("history retention on %s failed: %s", self.path, exc)
            return False
        return True

    def counters(self) -> tuple[int, int, int, int, int]:
        """(bad pushes, bad values, skipped pushes, of them out of order, pushes dropped)."""
        return (self.bad, sum(a.bad_values for a in self._aggs.values()), self.skipped,
                sum(a.out_of_order for a in self._aggs.values()), self.samples_dropped)

    def log_counters(self) -> None:
        """One log line when a counter moved since the last one (hourly and at close)."""
        now = self.counters()
        if now == self._reported:
            return
        d = [a - b for a, b in zip(now, self._reported, strict=True)]
        self._reported = now
        level = logging.WARNING if d[0] or d[1] or d[4] else logging.INFO
        log.log(level, "history since the last report: %s bad push(es), %s bad value(s) (negative registers) "
                "ignored; %s push(es) skipped as already stored (%s of them out of order); %s push(es) lost "
                "their full-resolution copy while the disk refused", *d)

    def _expire(self, now_s: float, meters: Iterable[int] | None = None) -> None:
        minute_cut = int(now_s // 3600) - self.minute_retention_days * 24
        push_cut = int((now_s - self.recent_hours * 3600) * 1e9)
        for mid in self._meters.values() if meters is None else meters:
            self.db.execute("DELETE FROM minute_block WHERE id >= ? AND id < ?",
                            (block_id(mid, 0), block_id(mid, max(minute_cut, 0))))
            self.db.execute("DELETE FROM push_chunk WHERE meter = ? AND t0 < ?", (mid, push_cut))

    def close(self) -> None:
        """Write everything, the open minutes too, close the database and release the lock."""
        try:
            self.flush(everything=True)
            self.log_counters()
        finally:
            self.db.close()
            self._release()

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def summary(self) -> str:
        """What the database holds, for the start-up log line."""
        meters = self.db.execute("SELECT count(*) FROM meter").fetchone()[0]
        days = self.db.execute("SELECT count(*) FROM day").fetchone()[0]
        first = self.db.execute("SELECT min(day), max(day) FROM day").fetchone()
        size = sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())
        span = ""
        if first[0] is not None:
            span = f" from {date.fromordinal(first[0])} to {date.fromordinal(first[1])}"
        return f"{meters} meter(s), {days} meter-day(s){span}, {size / 1e6:.1f} MB"
