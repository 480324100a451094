"""Store-and-forward for MQTT: an sqlite3 outbox that survives outages and restarts.

Every MQTT message (one row each: topic, payload, qos, retain) is written here
first, in one transaction per push, and deleted only once the broker has taken
it: at QoS 1/2 when its PUBACK/PUBCOMP arrives (paho's ``on_publish``), at
QoS 0 (no acknowledgement exists) as soon as paho has written it to the socket.
Rows are sent in ``id`` order. The database runs in WAL mode with
``synchronous=NORMAL``: a committed push survives a killed process; only a
power loss may cost the last moments.

The size is bounded by ``max_bytes`` counted as topic + payload bytes (the file
itself is somewhat larger): beyond it, the oldest rows are deleted, counted
and logged.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from meterpipe.publishers.mqtt.layout import OutMessage

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS cursor (
    meter TEXT PRIMARY KEY,
    received_ns INTEGER NOT NULL
);
"""


class Spool:
    def __init__(self, path: Path | str, max_bytes: int) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self.dropped = 0
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(CAST(topic AS BLOB)) + LENGTH(payload)), 0) FROM outbox").fetchone()
        self._count = int(row[0])
        self.size = int(row[1])
        if self._count:
            log.info("MQTT spool %s holds %s message(s) from before; they are sent first", path, self._count)

    def __len__(self) -> int:
        return self._count

    def add(self, messages: Sequence[OutMessage], *, meter: str | None = None, received_ns: int = 0) -> None:
        """Store the messages of one push (one transaction, with the push's receive
        time as the meter's replay cursor); then trim the oldest beyond max_bytes."""
        rows = [(m.topic, m.payload, m.qos, int(m.retain)) for m in messages]
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO outbox (topic, payload, qos, retain) VALUES (?, ?, ?, ?)", rows)
            if meter is not None:
                self._db.execute(
                    "INSERT INTO cursor (meter, received_ns) VALUES (?, ?) "
                    "ON CONFLICT(meter) DO UPDATE SET received_ns = MAX(received_ns, excluded.received_ns)",
                    (meter, received_ns),
                )
        if not rows:
            return
        self._count += len(rows)
        self.size += sum(len(m.topic.encode()) + len(m.payload) for m in messages)
        if self.size > self.max_bytes:
            self._trim()

    def _trim(self) -> None:
        excess = self.size - self.max_bytes
        freed = 0
        last_id = None
        n = 0
        for row_id, size in self._db.execute(
                "SELECT id, LENGTH(CAST(topic AS BLOB)) + LENGTH(payload) FROM outbox ORDER BY id"):
            freed += int(size)
            last_id = int(row_id)
            n += 1
            if freed >= excess:
                break
        if last_id is None:
            return
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM outbox WHERE id <= ?", (last_id,))
        self._count -= n
        self.size -= freed
        self.dropped += n
        log.warning("MQTT spool over its limit of %s bytes (broker away too long): deleted the %s "
                    "oldest message(s), %s dropped so far", self.max_bytes, n, self.dropped)

    def batch(self, after_id: int, limit: int) -> list[tuple[int, OutMessage]]:
        """Up to ``limit`` rows with id > ``after_id``, oldest first."""
        cur = self._db.execute(
            "SELECT id, topic, payload, qos, retain FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit))
        return [(int(i), OutMessage(t, bytes(p), int(q), bool(r))) for i, t, p, q, r in cur]

    def delete(self, ids: Iterable[int]) -> None:
        """Forget acknowledged rows (ids already gone, e.g. trimmed, are ignored)."""
        id_list = [(i,) for i in ids]
        if not id_list:
            return
        with self._db:
            self._db.execute("BEGIN")
            before = self._db.total_changes
            for (i,) in id_list:
                row = self._db.execute(
                    "SELECT LENGTH(CAST(topic AS BLOB)) + LENGTH(payload) FROM outbox WHERE id = ?", (i,)).fetchone()
                if row is not None:
                    self.size -= int(row[0])
            self._db.executemany("DELETE FROM outbox WHERE id = ?", id_list)
            self._count -= self._db.total_changes - before

    def cursor(self) -> dict[str, int]:
        """Per meter, the receive time of the newest push stored (sent or not)."""
        return {str(m): int(ns) for m, ns in self._db.execute("SELECT meter, received_ns FROM cursor")}

    def close(self) -> None:
        self._db.close()
