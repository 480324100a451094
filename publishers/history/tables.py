"""The history database: its tables, and opening it for writing or reading.

One SQLite file, written by the history publisher only (WAL, ``synchronous=NORMAL``,
one transaction a minute), read by the web process (``mode=ro``)::

    meta(key, value)                     app, schema, day_zone (the zone the day rows were built in)
    meter(id, name, meter_id, first_ns, last_ns, state)
                                         last_ns = the cursor; state = register values (JSON)
    quantity(id, meter, name, unit, kind)
                                         kind "gauge" | "register"; registers in Wh / varh / VAh
    minute_block(id, data)               an hour of minutes (codec.encode_block), kept
                                         ``minute_retention_days``; id = meter << 32 | unix hour
                                         (a rowid table: its 1-5 KB rows fill the pages, where
                                         a WITHOUT ROWID table would give each an overflow page)
    push_chunk(meter, t0, data)          pushes at full resolution (codec.encode_chunk), kept
                                         ``recent_hours``
    quarter(meter, q, gap, import_mwh, data)
                                         energy per UTC quarter (unix s // 900), forever
    day(meter, day, gap, data, peak_q, peak_mwh)
                                         energy per local day (date ordinal) in day_zone, forever

Energy deltas (``data`` of quarter and day) are register id -> milli-units.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from meterpipe.common.errors import ConfigError
from meterpipe.publishers.history.codec import BlobError

APPLICATION_ID = 0x6D706869  # "mphi"
SCHEMA_VERSION = 1
FIELD = "publishers.history.path"


def block_id(meter: int, hour: int) -> int:
    """The key of a minute block: the meter's id and the unix hour (unix s // 3600)."""
    return meter << 32 | hour

DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meter (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, meter_id TEXT,
    first_ns INTEGER, last_ns INTEGER, state TEXT);
CREATE TABLE IF NOT EXISTS quantity (
    id INTEGER PRIMARY KEY, meter INTEGER NOT NULL, name TEXT NOT NULL, unit TEXT,
    kind TEXT NOT NULL, UNIQUE (meter, name));
CREATE TABLE IF NOT EXISTS minute_block (id INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS push_chunk (
    meter INTEGER NOT NULL, t0 INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (meter, t0)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quarter (
    meter INTEGER NOT NULL, q INTEGER NOT NULL, gap INTEGER NOT NULL, import_mwh INTEGER NOT NULL,
    data BLOB NOT NULL, PRIMARY KEY (meter, q)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS day (
    meter INTEGER NOT NULL, day INTEGER NOT NULL, gap INTEGER NOT NULL, data BLOB NOT NULL,
    peak_q INTEGER, peak_mwh INTEGER, PRIMARY KEY (meter, day)) WITHOUT ROWID;
"""


class DatabaseInUseError(ConfigError):
    """Another writer (the history process, an import, the demo backfill) holds the database."""

    def __init__(self, path: Path) -> None:
        self.reason = (f"the history database {path} is in use by another writer (the history process?): "
                       "stop it first (meterpipe stop, or supervisorctl stop history)")
        super().__init__(FIELD, self.reason)
        self.path = path


def lock_path(path: Path) -> Path:
    """The advisory lock file beside the database: ``<db>.lock``."""
    return path.with_name(path.name + ".lock")


def take_writer_lock(path: Path) -> int:
    """An exclusive, non-blocking ``flock`` on ``<db>.lock`` (the fd; closing it releases the lock);
    DatabaseInUseError when another writer holds it. The kernel drops it when the holder dies."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ConfigError(FIELD, f"cannot create the lock file {lock_path(path)}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise DatabaseInUseError(path) from exc
    return fd


class DamagedRow(BlobError):
    """A stored row whose blob cannot be decoded: which table, and the WHERE that selects it."""

    def __init__(self, table: str, where: str, key: tuple[int, ...], why: str) -> None:
        super().__init__(f"damaged {table} row {key}: {why}")
        self.table = table
        self.where = where
        self.key = key


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; on any exception ROLLBACK (if still open) and re-raise."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the original error is the one to report
        raise
    db.execute("COMMIT")


def _foreign(path: Path, why: str) -> ConfigError:
    return ConfigError(FIELD, f"{path} is not a meterpipe history database ({why}); move it away "
                       "or set another path")


def open_for_writing(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the database; ConfigError naming the path when it is not ours."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(FIELD, f"cannot create the directory of {path}: {exc.strerror or exc}") from exc
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise ConfigError(FIELD, f"cannot open {path}: {exc}") from exc
    try:
        app = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app == 0 and tables == 0:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif app != APPLICATION_ID:
            raise _foreign(path, "another application's SQLite file")
        elif version > SCHEMA_VERSION:
            raise ConfigError(FIELD, f"{path} was written by a newer meterpipe (schema {version}, "
                              f"this one knows {SCHEMA_VERSION})")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(DDL)
        db.execute("INSERT OR IGNORE INTO meta VALUES ('app', 'meterpipe-history')")
        db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        db.execute("PRAGMA quick_check(1)").fetchone()
    except sqlite3.DatabaseError as exc:
        db.close()
        raise _foreign(path, str(exc)) from exc
    except ConfigError:
        db.close()
        raise
    return db


def open_for_reading(path: Path) -> sqlite3.Connection | None:
    """A read-only connection; None while there is no database yet (no file, or one the writer is
    still creating). A damaged file or another program's database raises ``sqlite3.DatabaseError``:
    that is not "no data", and the web says so (503) instead of showing empty charts."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                         check_same_thread=False)
    try:
        db.execute("PRAGMA query_only=1")
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        tables = {str(n) for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error:
        db.close()
        raise
    if app_id == APPLICATION_ID and "day" in tables:
        return db
    db.close()
    if app_id == APPLICATION_ID or not tables:  # the writer is creating it right now
        return None
    raise sqlite3.DatabaseError(f"{path} is not a meterpipe history database")
