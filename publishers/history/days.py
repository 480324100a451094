"""The materialised local days: each day row is the sum of its quarter rows in ``day_zone``.

The year view sums a year of day rows (365 small rows) instead of 35,000
quarters. Days depend on the time zone, which is in the config and may change:
the zone the rows were built in is kept in ``meta.day_zone``; a writer started
with another zone rebuilds every day row from the quarters (which are UTC and
never change), and a reader whose zone differs sums the quarters itself.
"""

from __future__ import annotations

import sqlite3
from datetime import date
from zoneinfo import ZoneInfo

from meterpipe.publishers.history.aggregate import day_of_quarter, quarters_of_day, sum_days
from meterpipe.publishers.history.codec import BlobError, decode_deltas, encode_deltas
from meterpipe.publishers.history.tables import DamagedRow, transaction


def rebuild_day(db: sqlite3.Connection, zone: ZoneInfo, mid: int, day: int) -> None:
    """A local day's row (date ordinal) from its quarters: the sum, any gap, the highest non-gap quarter.
    A damaged quarter blob raises :class:`DamagedRow` naming it."""
    span = quarters_of_day(date.fromordinal(day), zone)
    rows = db.execute("SELECT q, gap, import_mwh, data FROM quarter WHERE meter = ? AND q >= ? AND q < ?",
                      (mid, span.start, span.stop))
    summed = sum_days(((q, bool(g), imp, quarter_deltas(mid, q, data)) for q, g, imp, data in rows), zone)
    one = summed.get(date.fromordinal(day))
    if one is None:
        db.execute("DELETE FROM day WHERE meter = ? AND day = ?", (mid, day))
        return
    db.execute("INSERT OR REPLACE INTO day VALUES (?, ?, ?, ?, ?, ?)",
               (mid, day, int(one.gap), encode_deltas(one.deltas), one.peak_q,
                None if one.peak_q is None else one.peak_mwh))


def quarter_deltas(mid: int, q: int, data: bytes) -> dict[int, int]:
    """The deltas of a stored quarter row; DamagedRow naming it when its blob is damaged."""
    try:
        return decode_deltas(data)
    except BlobError as exc:
        raise DamagedRow("quarter", "meter = ? AND q = ?", (mid, q), str(exc)) from exc


def ensure_day_zone(db: sqlite3.Connection, zone: ZoneInfo) -> tuple[str, int] | None:
    """Rebuild every day row when they were built in another zone (one transaction);
    (the old zone, days rebuilt) then, else None. A new database just records its zone."""
    row = db.execute("SELECT value FROM meta WHERE key = 'day_zone'").fetchone()
    if row is not None and row[0] == zone.key:
        return None
    days = {(mid, day_of_quarter(q, zone).toordinal()) for mid, q in db.execute("SELECT meter, q FROM quarter")}
    with transaction(db):
        db.execute("DELETE FROM day")
        for mid, d in sorted(days):
            rebuild_day(db, zone, mid, d)
        db.execute("INSERT OR REPLACE INTO meta VALUES ('day_zone', ?)", (zone.key,))
    return None if row is None else (str(row[0]), len(days))
