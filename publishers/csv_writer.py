"""CSV files: one file per meter per UTC day, one row per push.

Layout: ``<directory>/<meter>/<YYYY-MM-DD>.csv`` with the header
``time,meter_id,<name> [<unit>],...`` and one row per push.

* ``time`` is the push's *receive* time (the decoder's ``received_ns``) in
  ISO-8601 UTC with milliseconds (``2024-05-01T12:00:00.123Z``); the day of the
  file is the UTC day of that time. The receive time is used rather than the
  meter's clock because many meters send none, and it is monotonic per host.
* Values are the exact decimal text (``230.1``, never ``230.10000000000002``).
* Each row is written with one ``write()`` to a file opened ``O_APPEND``, so a
  process crash (even SIGKILL) never leaves half a line: the kernel has the
  whole line or none of it. There is no fsync per row (it would wear SD cards
  at one push per second); after a power loss the last seconds may be missing
  or, rarely, a tail torn; the next start truncates a torn tail and logs it.
* When the set of readings changes during a day (a firmware update, a new
  push list), the columns of the existing file are left alone and the rows go
  to a new file ``<YYYY-MM-DD>.<n>.csv`` (n = 1, 2, ...) with the new header:
  every file has one consistent header, which is what a spreadsheet expects.
  A file of the day whose header matches is appended to (after a restart, or
  when a meter alternates between lists, as Aidon, Kaifa and Kamstrup meters
  do: one file per list, not one per switch); else the next ``.<n>`` starts.
* A directory that cannot be written (full disk, read-only, gone) is logged
  once; rows wait in memory, in order, and are written as soon as it can be
  written again (retried with each push and tick; never a crash). Only beyond
  ``MAX_PENDING_ROWS`` is the oldest waiting row dropped (counted in
  ``rows_lost``). A write that fails half-way is cut back (``ftruncate``), so no
  torn line is left behind for the rows that follow.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections import deque
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from meterpipe.common.schema import ReadingsMessage, check_meter_name
from meterpipe.publishers.subscriber import Handler

log = logging.getLogger(__name__)

_DAY_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:\.(\d+))?\.csv$")
RETENTION_EVERY_S = 3600.0
MAX_PENDING_ROWS = 100_000  # rows kept while the directory cannot be written (~28 h of one meter at 1 s)


def header_of(msg: ReadingsMessage) -> list[str]:
    cols = ["time", "meter_id"]
    for r in msg.push.readings:
        cols.append(f"{r.name} [{r.unit}]" if r.unit else r.name)
    return cols


def row_of(msg: ReadingsMessage) -> list[str]:
    t = datetime.fromtimestamp(msg.received_ns / 1e9, UTC)
    stamp = t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    return [stamp, msg.push.meter_id or ""] + [r.text() for r in msg.push.readings]


def csv_line(fields: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    return buf.getvalue()


def utc_day(received_ns: int) -> date:
    return datetime.fromtimestamp(received_ns / 1e9, UTC).date()


def repair_tail(path: Path) -> int:
    """Truncate an incomplete last line; return the bytes removed (0 if none)."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return 0
        # look back for the last newline
        pos = size
        keep = 0
        while pos > 0:
            step = min(4096, pos)
            pos -= step
            f.seek(pos)
            chunk = f.read(step)
            i = chunk.rfind(b"\n")
            if i >= 0:
                keep = pos + i + 1
                break
        f.truncate(keep)
    return size - keep


def read_header(path: Path) -> list[str] | None:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            line = f.readline()
    except (OSError, UnicodeDecodeError):
        return None
    if not line.endswith("\n"):
        return None
    return next(csv.reader([line]), None)


@dataclass(slots=True)
class _Open:
    day: date
    header: list[str]
    path: Path
    fd: int


class CsvStore:
    """Writes rows for all meters; owns one open file per meter."""

    def __init__(self, directory: Path, retention_days: int | None = None) -> None:
        self.directory = directory
        self.retention_days = retention_days
        self.rows_written = 0
        self.rows_lost = 0
        self.files_deleted = 0
        self._open: dict[str, _Open] = {}
        self._failing = False
        self._pending: deque[ReadingsMessage] = deque()
        self.max_pending = MAX_PENDING_ROWS

    # --- writing ---------------------------------------------------------------

    def write(self, msg: ReadingsMessage) -> bool:
        """Append one row after any still waiting; False when it has to wait (directory not writable)."""
        check_meter_name(msg.meter)
        self._pending.append(msg)
        if len(self._pending) > self.max_pending:
            self._pending.popleft()
            self.rows_lost += 1
        return self.flush()

    @property
    def pending(self) -> int:
        """Rows waiting for the directory to become writable."""
        return len(self._pending)

    def flush(self) -> bool:
        """Write the waiting rows in order; False when the directory still cannot be written."""
        while self._pending:
            msg = self._pending[0]
            try:
                self._write_row(msg)
            except OSError as exc:
                if not self._failing:
                    self._failing = True
                    log.error("cannot write CSV under %s: %s; rows wait in memory (up to %s) and writing "
                              "is retried with every push", self.directory, exc, self.max_pending)
                return False
            self._pending.popleft()
            self.rows_written += 1
        if self._failing:
            self._failing = False
            log.warning("writing CSV under %s again (%s row(s) lost meanwhile)", self.directory, self.rows_lost)
        return True

    def _write_row(self, msg: ReadingsMessage) -> None:
        meter = msg.meter
        try:
            fd = self._fd_for(meter, utc_day(msg.received_ns), header_of(msg))
            size = os.fstat(fd).st_size
        except OSError:
            self._drop(meter)
            raise
        try:
            _write_all(fd, csv_line(row_of(msg)).encode("utf-8"))
        except OSError:
            try:
                os.ftruncate(fd, size)  # no torn line before the rows that follow
            except OSError:
                pass
            self._drop(meter)
            raise

    def _fd_for(self, meter: str, day: date, header: list[str]) -> int:
        cur = self._open.get(meter)
        if cur is not None and cur.day == day and cur.header == header:
            return cur.fd
        if cur is not None:
            self._drop(meter)
            if cur.day == day:
                log.info("meter %s: the set of readings changed; new columns go to a new file", meter)
        path, need_header = self._choose_file(meter, day, header)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if need_header:
                _write_all(fd, csv_line(header).encode("utf-8"))
        except OSError:
            os.close(fd)
            raise
        self._open[meter] = _Open(day, header, path, fd)
        log.info("meter %s: writing %s", meter, path)
        return fd

    def _choose_file(self, meter: str, day: date, header: list[str]) -> tuple[Path, bool]:
        folder = self.directory / meter
        folder.mkdir(parents=True, exist_ok=True)
        stem = day.isoformat()
        n = 0
        while (folder / _name(stem, n + 1)).exists():
            n += 1
        newest = folder / _name(stem, n)
        if not newest.exists():
            return newest, True
        removed = repair_tail(newest)
        if removed:
            log.warning("%s ended in a torn line: truncated %s byte(s)", newest, removed)
        existing = read_header(newest)
        if existing is None:  # empty (or unreadable header): start it afresh
            if newest.stat().st_size == 0:
                return newest, True
        elif existing == header:
            return newest, False
        # Meters that alternate between lists (Aidon, Kaifa, Kamstrup: list 1 every
        # few seconds, list 2 every ten) keep one file per list, not a new file per switch.
        for k in range(n - 1, -1, -1):
            if read_header(folder / _name(stem, k)) == header:
                return folder / _name(stem, k), False
        return folder / _name(stem, n + 1), True

    def _drop(self, meter: str) -> None:
        cur = self._open.pop(meter, None)
        if cur is not None:
            try:
                os.close(cur.fd)
            except OSError:
                pass

    def close(self) -> None:
        for meter in list(self._open):
            self._drop(meter)

    # --- where we are (for the decoder's replay after a restart) ---------------

    def last_received(self) -> dict[str, int]:
        """Per meter, the receive time (ns) of the newest row on disk.

        Rows carry milliseconds: the cursor is the end of that millisecond (a meter
        never pushes twice within one).
        """
        cursor: dict[str, int] = {}
        try:
            folders = [p for p in self.directory.iterdir() if p.is_dir()]
        except OSError:
            return cursor
        for folder in folders:
            days = [(m.group(1), int(m.group(2) or 0), f) for f in folder.iterdir() if (m := _DAY_FILE.match(f.name))]
            for _, _, newest in sorted(days, reverse=True):
                stamp = _last_time(newest)
                if stamp is not None:
                    cursor[folder.name] = stamp
                    break
        return cursor

    # --- retention -------------------------------------------------------------

    def expire(self, today: date) -> int:
        """Delete day files older than ``retention_days`` before ``today``."""
        if not self.retention_days or self.retention_days <= 0:
            return 0
        cutoff = today - timedelta(days=self.retention_days)
        deleted = 0
        try:
            meters = [p for p in self.directory.iterdir() if p.is_dir()]
        except OSError:
            return 0
        for folder in meters:
            try:
                files = list(folder.iterdir())
            except OSError:
                continue
            for f in files:
                m = _DAY_FILE.match(f.name)
                if not m:
                    continue
                try:
                    day = date.fromisoformat(m.group(1))
                except ValueError:
                    continue
                if day < cutoff:
                    try:
                        f.unlink()
                        deleted += 1
                        log.info("retention: deleted %s", f)
                    except OSError as exc:
                        log.warning("retention: cannot delete %s: %s", f, exc)
        self.files_deleted += deleted
        return deleted


def _last_time(path: Path) -> int | None:
    """Receive time (ns, end of its millisecond) of the last complete row of a file."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - 65536))
            lines = f.read().split(b"\n")
    except OSError:
        return None
    for line in reversed(lines[:-1]):  # the part after the last newline is no row
        stamp = line.split(b",", 1)[0].decode("ascii", "replace")
        try:
            t = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        except ValueError:
            continue  # the header, or not a row of ours
        return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000 + 999_999
    return None


def _name(stem: str, n: int) -> str:
    return f"{stem}.csv" if n == 0 else f"{stem}.{n}.csv"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class CsvHandler(Handler):
    """Subscriber handler: readings to rows, retention once an hour."""

    def __init__(self, store: CsvStore) -> None:
        self.store = store
        self._next_retention = 0.0

    def on_readings(self, msg: ReadingsMessage) -> None:
        self.store.write(msg)

    def tick(self, now: float) -> None:
        if self.store.pending:
            self.store.flush()
        if now >= self._next_retention:
            self._next_retention = now + RETENTION_EVERY_S
            self.store.expire(datetime.fromtimestamp(now, UTC).date())

    def replay_cursor(self) -> dict[str, int]:
        return self.store.last_received()
