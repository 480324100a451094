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
per quarter), so no Wh is ever lost.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from zoneinfo import ZoneInfo

from meterpipe.common.errors import SchemaError
from meterpipe.common.schema import ReadingsMessage, check_meter_name
from meterpipe.publishers.history.aggregate import (
    MeterAggregator,
    Minute,
    RegisterState,
    Value,
    add_into,
    day_of_quarter,
    import_delta,
    values_of,
)
from meterpipe.publishers.history.codec import (
    MinuteCells,
    decode_block,
    decode_deltas,
    encode_block,
    encode_chunk,
    encode_deltas,
)
from meterpipe.publishers.history.days import ensure_day_zone, rebuild_day
from meterpipe.publishers.history.tables import block_id, open_for_writing

log = logging.getLogger(__name__)

_Qid = Callable[[int, str, str | None, str], int]  # the quantity-id lookup of one flush

MAX_PENDING_MINUTES = 20_000  # minutes waiting for a refusing disk (two weeks of one meter)
MAX_PENDING_SAMPLES = 10_000  # pushes kept at full resolution meanwhile (under 3 h of one meter at 1 s)


class HistoryWriter:
    """The one writer of a history database (see the module docstring)."""

    def __init__(self, path: Path, zone: ZoneInfo, *, minute_retention_days: int = 400,
                 recent_hours: int = 48) -> None:
        self.path = path
        self.zone = zone
        self.minute_retention_days = minute_retention_days
        self.recent_hours = recent_hours
        self.db = open_for_writing(path)
        self._meters: dict[str, int] = {}
        self._states: dict[str, RegisterState] = {}
        self._cursor: dict[str, int] = {}
        for mid, name, last_ns, state in self.db.execute("SELECT id, name, last_ns, state FROM meter"):
            self._meters[name] = mid
            if last_ns is not None:
                self._cursor[name] = last_ns
            self._states[name] = _state_from_json(state, last_ns)
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
        self._check_day_zone()

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
        try:
            self.db.execute("BEGIN IMMEDIATE")
            qids = self._write(minutes)
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if not self._failing:
                self._failing = True
                log.error("cannot write the history database %s: %s; %s minute(s) wait in memory (up to %s) "
                          "and writing is retried with every flush", self.path, exc, len(minutes),
                          MAX_PENDING_MINUTES)
            return False
        self._qids.update(qids)
        for meter, m in minutes:
            self._cursor[meter] = m.end_ns
            self._states[meter] = m.state
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

    def _write(self, minutes: Sequence[tuple[str, Minute]]) -> dict[tuple[int, str], int]:
        db = self.db
        new_qids: dict[tuple[int, str], int] = {}

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
            mid = self._meter_row(meter, m)
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
                    row = db.execute("SELECT data FROM minute_block WHERE id = ?",
                                     (block_id(mid, hour),)).fetchone()
                    block = blocks[(mid, hour)] = decode_block(row[0]) if row else {}
                _merge_minute(block, m.minute % 60, cells)
            self._write_samples(mid, m, qid)
            if m.pushes:
                gap, deltas = quarters.get((mid, m.quarter), (False, {}))
                add_into(deltas, m.deltas)
                quarters[(mid, m.quarter)] = (gap or m.gap, deltas)
        for (meter, q), (gap, deltas) in self._orphans.items():
            mid = self._meter_row(meter, None)
            old_gap, old = quarters.get((mid, q), (False, {}))
            add_into(old, deltas)
            quarters[(mid, q)] = (old_gap or gap, old)
        for (mid, hour), block in blocks.items():
            db.execute("INSERT OR REPLACE INTO minute_block VALUES (?, ?)", (block_id(mid, hour), encode_block(block)))
        days: set[tuple[int, int]] = set()
        for (mid, q), (gap, deltas) in quarters.items():
            self._add_quarter(mid, q, gap, deltas, qid)
            days.add((mid, day_of_quarter(q, self.zone).toordinal()))
        for mid, d in sorted(days):
            self._rebuild_day(mid, d)
        for meter, m in last.items():
            db.execute("UPDATE meter SET last_ns = ?, state = ?, first_ns = coalesce(first_ns, ?) WHERE id = ?",
                       (m.end_ns, _state_to_json(m.state), first[meter], self._meters[meter]))
        for mid, t_ns in newest.items():  # by data time, per meter: imports and backfills expire too
            hour = t_ns // 3_600_000_000_000
            if hour > self._retention_hour.get(mid, 0):
                self._retention_hour[mid] = hour
                self._expire(t_ns / 1e9, [mid])
        return new_qids

    def _meter_row(self, meter: str, m: Minute | None) -> int:
        mid = self._meters.get(meter)
        if mid is None:
            cur = self.db.execute("INSERT INTO meter (name) VALUES (?)", (meter,))
            mid = int(cur.lastrowid or 0)
            self._meters[meter] = mid  # (a rolled-back insert is redone under the same name next time)
        if m is not None and m.meter_id is not None:
            self.db.execute("UPDATE meter SET meter_id = ? WHERE id = ?", (m.meter_id, mid))
        return mid

    def _write_samples(self, mid: int, m: Minute, qid: _Qid) -> None:
        chunk: list[tuple[int, tuple[tuple[str, int, int], ...]]] = []
        names: tuple[str, ...] = ()
        for t, values in m.samples:
            these = tuple(v[0] for v in values)
            if chunk and these != names:
                self._write_chunk(mid, m, chunk, qid)
                chunk = []
            names = these
            chunk.append((t, values))
        if chunk:
            self._write_chunk(mid, m, chunk, qid)

    def _write_chunk(self, mid: int, m: Minute, chunk: list[tuple[int, tuple[tuple[str, int, int], ...]]],
                     qid: _Qid) -> None:
        first = chunk[0][1]
        columns = []
        for j, (name, _, _) in enumerate(first):
            kind = "gauge" if name in m.gauges else "register"
            columns.append((qid(mid, name, m.units.get(name), kind), min(row[1][j][2] for row in chunk)))
        rows = [[v[1] * 10 ** (v[2] - columns[j][1]) for j, v in enumerate(values)] for _, values in chunk]
        t0 = chunk[0][0]
        self.db.execute("INSERT OR REPLACE INTO push_chunk VALUES (?, ?, ?)",
                        (mid, t0, encode_chunk(t0, [t for t, _ in chunk], columns, rows)))

    def _add_quarter(self, mid: int, q: int, gap: bool, deltas: dict[str, int], qid: _Qid) -> None:
        row = self.db.execute("SELECT gap, import_mwh, data FROM quarter WHERE meter = ? AND q = ?",
                              (mid, q)).fetchone()
        by_id = {qid(mid, n, None, "register"): v for n, v in deltas.items()}
        imp = import_delta(deltas)  # linear: the old quarter's import plus this flush's
        if row is not None:
            gap = gap or bool(row[0])
            imp += row[1]
            for k, v in decode_deltas(row[2]).items():
                by_id[k] = by_id.get(k, 0) + v
        self.db.execute("INSERT OR REPLACE INTO quarter VALUES (?, ?, ?, ?, ?)",
                        (mid, q, int(gap), imp, encode_deltas(by_id)))

    def _rebuild_day(self, mid: int, day: int) -> None:
        rebuild_day(self.db, self.zone, mid, day)

    def _check_day_zone(self) -> None:
        rebuilt = ensure_day_zone(self.db, self.zone)
        if rebuilt is not None:
            log.info("history: time zone changed from %s to %s: %s local day(s) rebuilt from the quarters",
                     rebuilt[0], self.zone.key, rebuilt[1])

    # --- retention, close, summary ------------------------------------------------------------

    def expire(self, now_s: float) -> bool:
        """Delete minute rows and full-resolution pushes past their retention; False if refused."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self._expire(now_s)
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            log.warning("history retention on %s failed: %s", self.path, exc)
            return False
        return True

    def _expire(self, now_s: float, meters: Iterable[int] | None = None) -> None:
        minute_cut = int(now_s // 3600) - self.minute_retention_days * 24
        push_cut = int((now_s - self.recent_hours * 3600) * 1e9)
        for mid in self._meters.values() if meters is None else meters:
            self.db.execute("DELETE FROM minute_block WHERE id >= ? AND id < ?",
                            (block_id(mid, 0), block_id(mid, max(minute_cut, 0))))
            self.db.execute("DELETE FROM push_chunk WHERE meter = ? AND t0 < ?", (mid, push_cut))

    def close(self) -> None:
        """Write everything, the open minutes too, and close the database."""
        try:
            self.flush(everything=True)
        finally:
            self.db.close()

    def summary(self) -> str:
        """What the database holds, for the start-up log line."""
        meters = self.db.execute("SELECT count(*) FROM meter").fetchone()[0]
        days = self.db.execute("SELECT count(*) FROM day").fetchone()[0]
        first = self.db.execute("SELECT min(day), max(day) FROM day").fetchone()
        size = sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())
        span = ""
        if first[0] is not None:
            from datetime import date

            span = f" from {date.fromordinal(first[0])} to {date.fromordinal(first[1])}"
        return f"{meters} meter(s), {days} meter-day(s){span}, {size / 1e6:.1f} MB"


def _merge_minute(block: dict[int, MinuteCells], offset: int, cells: MinuteCells) -> None:
    old = block.get(offset)
    if old is None:
        block[offset] = cells
        return
    for q, c in cells.gauges.items():
        if q in old.gauges:
            old.gauges[q].merge(c)
        else:
            old.gauges[q] = c
    old.registers.update(cells.registers)


def _state_to_json(state: RegisterState) -> str:
    return json.dumps({"t": state.last_ns, "r": state.values}, separators=(",", ":"))


def _state_from_json(text: str | None, last_ns: int | None) -> RegisterState:
    if not text:
        return RegisterState(last_ns, {})
    try:
        obj = json.loads(text)
        values = {str(k): int(v) for k, v in obj.get("r", {}).items()}
        t = obj.get("t")
        return RegisterState(int(t) if t is not None else last_ns, values)
    except (ValueError, TypeError, AttributeError):
        return RegisterState(last_ns, {})
