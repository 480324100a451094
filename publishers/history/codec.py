"""Compact blobs for the history tables: varints, minute blocks, push chunks, delta lists.

A year of one meter's minutes is ~525,000 minutes of ~13 numbers (three per
gauge); one SQLite row per number would be several hundred MB. Instead a row
holds a block: an hour of minutes of one meter, or a run of pushes, column by
column, each column delta-coded (neighbouring minutes differ little), zigzag
and varint packed, then zlib-compressed. Integers only: a gauge is stored as
exact mantissas at a per-column decimal exponent, a register in milli-units.

Sans-IO; raises :class:`BlobError` on bytes it did not write.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from meterpipe.common.errors import MeterpipeError

BLOCK_VERSION = 1


class BlobError(MeterpipeError):
    """A history blob that cannot be decoded (a foreign or damaged database)."""

    kind = "history"


def scaled(mantissa: int | float, exp: int) -> float:
    """``mantissa * 10**exp`` as the float nearest to the exact value (``506, -2`` -> ``5.06``)."""
    factor: int = 10 ** abs(exp)
    return float(mantissa * factor) if exp >= 0 else mantissa / factor


def _zigzag(n: int) -> int:
    return n * 2 if n >= 0 else -n * 2 - 1


def _unzigzag(n: int) -> int:
    return n >> 1 if not n & 1 else -((n + 1) >> 1)


def pack_uints(values: Iterable[int], out: bytearray) -> None:
    for v in values:
        if v < 0:
            raise ValueError("pack_uints: negative value")
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)


def pack_ints(values: Iterable[int], out: bytearray) -> None:
    pack_uints((_zigzag(v) for v in values), out)


def pack_deltas(values: Sequence[int], out: bytearray) -> None:
    prev = 0
    deltas = []
    for v in values:
        deltas.append(v - prev)
        prev = v
    pack_ints(deltas, out)


class Reader:
    """Reads varints from a bytes object, front to back."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def uint(self) -> int:
        data, pos = self.data, self.pos
        shift = result = 0
        while True:
            if pos >= len(data) or shift > 1000:  # mantissas are unbounded ints; a cap all the same
                raise BlobError("history blob ends inside a number")
            b = data[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                self.pos = pos
                return result
            shift += 7

    def uints(self, n: int) -> list[int]:
        return [self.uint() for _ in range(n)]

    def sint(self) -> int:
        return _unzigzag(self.uint())

    def sints(self, n: int) -> list[int]:
        return [_unzigzag(self.uint()) for _ in range(n)]

    def deltas(self, n: int) -> list[int]:
        out = []
        acc = 0
        for _ in range(n):
            acc += _unzigzag(self.uint())
            out.append(acc)
        return out


def _compress(raw: bytearray) -> bytes:
    return zlib.compress(bytes(raw), 9)


def _decompress(blob: bytes) -> Reader:
    try:
        raw = zlib.decompress(blob)
    except zlib.error as exc:
        raise BlobError(f"history blob is not compressed data ({exc})") from exc
    r = Reader(raw)
    if r.uint() != BLOCK_VERSION:
        raise BlobError("history blob of an unknown version")
    return r


# --- minute blocks -------------------------------------------------------------


@dataclass(slots=True)
class GaugeCell:
    """One gauge in one minute: count, sum, min and max as mantissas at ``exp``."""

    count: int
    total: int
    lo: int
    hi: int
    exp: int

    def rescale(self, exp: int) -> None:
        """Express the mantissas at a finer (smaller) exponent, exactly."""
        if exp < self.exp:
            f = 10 ** (self.exp - exp)
            self.total *= f
            self.lo *= f
            self.hi *= f
            self.exp = exp

    def add(self, mantissa: int, exp: int) -> None:
        if exp < self.exp:
            self.rescale(exp)
        elif exp > self.exp:
            mantissa *= 10 ** (exp - self.exp)
        self.count += 1
        self.total += mantissa
        self.lo = min(self.lo, mantissa)
        self.hi = max(self.hi, mantissa)

    def merge(self, other: GaugeCell) -> None:
        o = GaugeCell(other.count, other.total, other.lo, other.hi, other.exp)
        exp = min(self.exp, o.exp)
        self.rescale(exp)
        o.rescale(exp)
        self.count += o.count
        self.total += o.total
        self.lo = min(self.lo, o.lo)
        self.hi = max(self.hi, o.hi)

    def mean(self) -> float:
        return scaled(self.total / self.count, self.exp) if self.total % self.count else \
            scaled(self.total // self.count, self.exp)

    def low(self) -> float:
        return scaled(self.lo, self.exp)

    def high(self) -> float:
        return scaled(self.hi, self.exp)


@dataclass(slots=True)
class MinuteCells:
    """Stored content of one minute: gauges by quantity id, register last values (milli-units)."""

    gauges: dict[int, GaugeCell]
    registers: dict[int, int]


def encode_block(minutes: dict[int, MinuteCells]) -> bytes:
    """An hour (or any run) of minutes, keyed by minute offset (0..59) -> blob."""
    offsets = sorted(minutes)
    gauge_ids = sorted({q for m in minutes.values() for q in m.gauges})
    reg_ids = sorted({q for m in minutes.values() for q in m.registers})
    out = bytearray()
    pack_uints((BLOCK_VERSION, len(offsets)), out)
    pack_deltas(offsets, out)
    pack_uints((len(gauge_ids), len(reg_ids)), out)
    for q in gauge_ids:
        cells = [minutes[o].gauges.get(q) for o in offsets]
        present = [c for c in cells if c is not None]
        exp = min(c.exp for c in present)
        for c in present:
            c.rescale(exp)
        pack_uints((q,), out)
        pack_ints((exp,), out)
        pack_uints((c.count if c is not None else 0 for c in cells), out)
        means = [c.total // c.count for c in present]
        pack_deltas([c.total for c in present], out)
        pack_uints((m - c.lo for m, c in zip(means, present, strict=True)), out)
        pack_uints((c.hi - m for m, c in zip(means, present, strict=True)), out)
    for q in reg_ids:
        values = [minutes[o].registers.get(q) for o in offsets]
        pack_uints((q,), out)
        pack_uints((0 if v is None else 1 for v in values), out)
        pack_deltas([v for v in values if v is not None], out)
    return _compress(out)


def decode_block(blob: bytes) -> dict[int, MinuteCells]:
    r = _decompress(blob)
    n = r.uint()
    offsets = r.deltas(n)
    minutes = {o: MinuteCells({}, {}) for o in offsets}
    n_gauges, n_regs = r.uint(), r.uint()
    for _ in range(n_gauges):
        q, exp = r.uint(), r.sint()
        counts = r.uints(n)
        k = sum(1 for c in counts if c)
        totals = r.deltas(k)
        los, his = r.uints(k), r.uints(k)
        i = 0
        for o, c in zip(offsets, counts, strict=True):
            if c:
                m = totals[i] // c
                minutes[o].gauges[q] = GaugeCell(c, totals[i], m - los[i], m + his[i], exp)
                i += 1
    for _ in range(n_regs):
        q = r.uint()
        flags = r.uints(n)
        values = r.deltas(sum(flags))
        i = 0
        for o, f in zip(offsets, flags, strict=True):
            if f:
                minutes[o].registers[q] = values[i]
                i += 1
    return minutes


# --- push chunks (the full-resolution recent window) ---------------------------


def encode_chunk(t0_ns: int, times_ns: Sequence[int], columns: Sequence[tuple[int, int]],
                 rows: Sequence[Sequence[int]]) -> bytes:
    """Pushes with the same columns ``(quantity id, exponent)``: times (ms after t0) and values."""
    out = bytearray()
    pack_uints((BLOCK_VERSION, len(times_ns), len(columns)), out)
    pack_deltas([(t - t0_ns) // 1_000_000 for t in times_ns], out)
    for j, (q, exp) in enumerate(columns):
        pack_uints((q,), out)
        pack_ints((exp,), out)
        pack_deltas([row[j] for row in rows], out)
    return _compress(out)


def decode_chunk(t0_ns: int, blob: bytes) -> tuple[list[int], dict[int, list[float]]]:
    """(times in ns, quantity id -> values) of one chunk."""
    r = _decompress(blob)
    n, ncols = r.uint(), r.uint()
    times = [t0_ns + ms * 1_000_000 for ms in r.deltas(n)]
    cols: dict[int, list[float]] = {}
    for _ in range(ncols):
        q, exp = r.uint(), r.sint()
        cols[q] = [scaled(v, exp) for v in r.deltas(n)]
    return times, cols


# --- delta lists (quarter and day rows) ----------------------------------------


def encode_deltas(deltas: dict[int, int]) -> bytes:
    """Register id -> energy (milli-units) as varint pairs; small, so not compressed."""
    out = bytearray()
    for q in sorted(deltas):
        pack_uints((q,), out)
        pack_ints((deltas[q],), out)
    return bytes(out)


def decode_deltas(blob: bytes) -> dict[int, int]:
    r = Reader(blob)
    out: dict[int, int] = {}
    while r.pos < len(blob):
        q = r.uint()
        out[q] = r.sint()
    return out
