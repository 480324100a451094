"""Put a push back together: link-layer segments and general-block-transfer blocks.

Sans-IO; the caller passes the receive time (ns) with every piece so that a
stale partial push is dropped after ``gap_ns`` instead of being glued to the
next one (a lost segment must never merge two pushes).

* :class:`SegmentAssembler` joins HDLC-segmented frames (format 0xA8) and
  M-Bus DLMS transport segments: ``first`` opens an APDU, ``more`` says more
  follow.
* :class:`BlockAssembler` joins general-block-transfer (0xE0) blocks, which
  must arrive numbered 1, 2, 3 ... with the last-block bit on the final one.

Both raise SequenceError for a duplicate, out-of-order or orphan piece, and
for a push abandoned by a new one; state is reset after every error.
"""

from __future__ import annotations

from meterpipe.common.errors import SequenceError, TruncatedError
from meterpipe.common.link.frames import LinkFrame
from meterpipe.decoder.axdr import read_length

GBT_TAG = 0xE0
GBT_LAST_BLOCK = 0x80
DEFAULT_GAP_NS = 3_000_000_000
MAX_APDU = 64 * 1024
# First bytes of a whole APDU: a frame without an LLC header that starts with one
# of these is complete in itself (GBT blocks after the first come so).
APDU_STARTS = (b"\x0f", b"\xdb", b"\xdf", b"\xe0")


class _Partial:
    """A push being put back together: its pieces, their size, the time of the last."""

    what = "push"

    def __init__(self, gap_ns: int = DEFAULT_GAP_NS, max_bytes: int = MAX_APDU) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._last_ns = 0
        self._gap_ns = gap_ns
        self._max = max_bytes

    @property
    def pending(self) -> bool:
        return bool(self._parts)

    def reset(self) -> None:
        self._parts.clear()
        self._size = 0

    def _late(self, now_ns: int) -> bool:
        """Record a piece's arrival; True when a partial push has waited too long for it."""
        late = bool(self._parts and self._gap_ns and now_ns - self._last_ns > self._gap_ns)
        self._last_ns = now_ns
        return late

    def _append(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._max:
            self.reset()
            raise TruncatedError(f"{self.what} larger than {self._max} bytes: dropped")
        self._parts.append(data)

    def _finish(self) -> bytes:
        apdu = b"".join(self._parts)
        self.reset()
        return apdu


class SegmentAssembler(_Partial):
    what = "segmented push"

    def add(self, frame: LinkFrame, now_ns: int) -> tuple[bytes | None, SequenceError | None]:
        """Feed one frame: (the whole APDU if this frame completes one, the
        error for an abandoned partial push if any). Raises SequenceError for an
        orphan continuation segment."""
        abandoned = None
        late = self._late(now_ns)
        if self._parts and (frame.first or late):
            why = "a new push started (segment lost)" if frame.first else "the next segment came too late"
            abandoned = SequenceError(f"segmented push abandoned after {len(self._parts)} segment(s): {why}")
            self.reset()
        if not self._parts:
            if not frame.more and (frame.first or frame.payload[:1] in APDU_STARTS):
                return frame.payload, abandoned
            if not frame.first:
                raise abandoned or SequenceError(
                    "segment of a push whose first segment was lost", data=frame.payload
                )
        self._append(frame.payload)
        if frame.more:
            return None, abandoned
        return self._finish(), abandoned


class BlockAssembler(_Partial):
    what = "GBT push"

    def __init__(self, gap_ns: int = DEFAULT_GAP_NS, max_bytes: int = MAX_APDU) -> None:
        super().__init__(gap_ns, max_bytes)
        self._next = 1

    def reset(self) -> None:
        super().reset()
        self._next = 1

    def add(self, block: bytes, now_ns: int) -> tuple[bytes | None, SequenceError | None]:
        """Feed one GBT APDU: (the joined inner APDU after the last block, the
        error for an abandoned partial push if any). Raises SequenceError for a
        duplicate, early or orphan block, and TruncatedError for a cut one."""
        if len(block) < 7 or block[0] != GBT_TAG:
            raise TruncatedError("general-block-transfer header cut short", data=block)
        control = block[1]
        number = int.from_bytes(block[2:4], "big")
        length, pos = read_length(block, 6)
        data = block[pos : pos + length]
        if len(data) != length:
            raise TruncatedError(f"GBT block {number} declares {length} bytes, has {len(data)}", data=block)
        abandoned = None
        late = self._late(now_ns)
        if self._parts and (number == 1 or late):
            abandoned = SequenceError(
                f"GBT push abandoned after block {self._next - 1}: "
                + ("a new push started (block lost)" if number == 1 else "the next block came too late")
            )
            self.reset()
        if number != self._next:
            expected = self._next
            self.reset()
            if abandoned is not None:
                raise abandoned
            what = "duplicated" if number < expected else "arrived early (a block was lost or reordered)"
            raise SequenceError(f"GBT block {number} {what}; expected block {expected}", data=block[:8])
        self._append(data)
        self._next = number + 1
        if control & GBT_LAST_BLOCK:
            return self._finish(), abandoned
        return None, abandoned
