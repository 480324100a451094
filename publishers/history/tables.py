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

import sqlite3
from pathlib import Path

from meterpipe.common.errors import ConfigError

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
    """A read-only connection, or None when there is no (usable) database yet."""
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                             check_same_thread=False)
        db.execute("PRAGMA query_only=1")
        if db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
            db.close()
            return None
        if db.execute("SELECT count(*) FROM sqlite_master WHERE name='day'").fetchone()[0] == 0:
            db.close()
            return None
    except sqlite3.Error:
        return None
    return db
