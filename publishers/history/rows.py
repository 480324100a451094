"""The rows one flush of :class:`~meterpipe.publishers.history.store.HistoryWriter` writes.

Minute blocks (merged with what an earlier flush stored of the same hour), push
chunks (a run of pushes with the same columns), quarter rows (added to what is
stored: deltas are additive) and each meter's register state as JSON. A stored
blob that cannot be decoded raises
:class:`~meterpipe.publishers.history.tables.DamagedRow` naming the row.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from meterpipe.publishers.history.aggregate import Minute, RegisterState, Sample, import_delta
from meterpipe.publishers.history.codec import BlobError, MinuteCells, decode_block, encode_chunk, encode_deltas
from meterpipe.publishers.history.days import quarter_deltas
from meterpipe.publishers.history.tables import DamagedRow

Qid = Callable[[int, str, str | None, str], int]  # the quantity-id lookup of one flush


def stored_block(db: sqlite3.Connection, key: int) -> dict[int, MinuteCells]:
    """The minutes stored of one hour block (empty when none)."""
    row = db.execute("SELECT data FROM minute_block WHERE id = ?", (key,)).fetchone()
    try:
        return decode_block(row[0]) if row else {}
    except BlobError as exc:
        raise DamagedRow("minute_block", "id = ?", (key,), str(exc)) from exc


def write_samples(db: sqlite3.Connection, mid: int, m: Minute, qid: Qid) -> None:
    """A minute's pushes at full resolution, one chunk per run of pushes with the same columns."""
    chunk: list[Sample] = []
    names: tuple[str, ...] = ()
    for t, values in m.samples:
        these = tuple(v[0] for v in values)
        if chunk and these != names:
            write_chunk(db, mid, m, chunk, qid)
            chunk = []
        names = these
        chunk.append((t, values))
    if chunk:
        write_chunk(db, mid, m, chunk, qid)


def write_chunk(db: sqlite3.Connection, mid: int, m: Minute, chunk: list[Sample], qid: Qid) -> None:
    first = chunk[0][1]
    columns = []
    for j, (name, _, _) in enumerate(first):
        kind = "gauge" if name in m.gauges else "register"
        columns.append((qid(mid, name, m.units.get(name), kind), min(row[1][j][2] for row in chunk)))
    rows = [[v[1] * 10 ** (v[2] - columns[j][1]) for j, v in enumerate(values)] for _, values in chunk]
    t0 = chunk[0][0]
    db.execute("INSERT OR REPLACE INTO push_chunk VALUES (?, ?, ?)",
               (mid, t0, encode_chunk(t0, [t for t, _ in chunk], columns, rows)))


def add_quarter(db: sqlite3.Connection, mid: int, q: int, gap: bool, deltas: dict[str, int], qid: Qid) -> None:
    """Add a flush's deltas (by register name) into the stored quarter row."""
    row = db.execute("SELECT gap, import_mwh, data FROM quarter WHERE meter = ? AND q = ?",
                     (mid, q)).fetchone()
    by_id = {qid(mid, n, None, "register"): v for n, v in deltas.items()}
    imp = import_delta(deltas)  # linear: the old quarter's import plus this flush's
    if row is not None:
        gap = gap or bool(row[0])
        imp += row[1]
        for k, v in quarter_deltas(mid, q, row[2]).items():
            by_id[k] = by_id.get(k, 0) + v
    db.execute("INSERT OR REPLACE INTO quarter VALUES (?, ?, ?, ?, ?)",
               (mid, q, int(gap), imp, encode_deltas(by_id)))


def merge_minute(block: dict[int, MinuteCells], offset: int, cells: MinuteCells) -> None:
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


class Staged:
    """What one flush creates: cached only after its COMMIT (a rollback must not leave ids behind)."""

    __slots__ = ("meters", "qids", "retention_hours")

    def __init__(self) -> None:
        self.meters: dict[str, int] = {}
        self.qids: dict[tuple[int, str], int] = {}
        self.retention_hours: dict[int, int] = {}


def state_to_json(state: RegisterState) -> str:
    times = {k: t for k, t in state.times.items() if t != state.last_ns}  # most come with every push
    return json.dumps({"t": state.last_ns, "r": state.values, **({"rt": times} if times else {})},
                      separators=(",", ":"))


def state_from_json(text: str | None, last_ns: int | None) -> RegisterState:
    if not text:
        return RegisterState(last_ns, {})
    try:
        obj = json.loads(text)
        values = {str(k): int(v) for k, v in obj.get("r", {}).items()}
        t = obj.get("t")
        last = int(t) if t is not None else last_ns
        times = {k: int(obj.get("rt", {}).get(k, last)) for k in values} if last is not None else {}
        return RegisterState(last, values, times)
    except (ValueError, TypeError, AttributeError):
        return RegisterState(last_ns, {})
