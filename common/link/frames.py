"""Link layer: cut a byte stream into HDLC frames or wired M-Bus long frames.

Sans-IO, after h11: feed bytes with :meth:`Framer.feed`, then call
:meth:`Framer.next_frame` until it returns :data:`NEED_DATA`. It returns a
:class:`LinkFrame` or raises :class:`FrameError` (``ChecksumError`` for a frame
whose structure is intact but whose checksum is not); after an error the bad
bytes are gone and the next call carries on with the rest of the stream.

* Incomplete is not corrupt: a frame whose bytes have not all arrived yet is
  NEED_DATA, never an error.
* HDLC frames may share their flags (``7E ... 7E ... 7E``).
* Bytes that cannot start a frame are skipped silently and counted in
  :attr:`Framer.skipped`; more than ``max_buffer`` bytes without a complete
  frame raise ``BufferOverflowError`` and are dropped.

Readers use this class to cut frames without decoding them; the decoder uses it
again to read the frames it receives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from meterpipe.common.errors import BufferOverflowError, ChecksumError, FrameError
from meterpipe.common.link.crc import crc16_x25, mbus_checksum
from meterpipe.common.schema import LinkLayer

HDLC_FLAG: Final = 0x7E
MBUS_START: Final = 0x68
MBUS_STOP: Final = 0x16
LLC_HEADERS: Final = (b"\xe6\xe7\x00", b"\xe6\xe6\x00")
DEFAULT_MAX_BUFFER: Final = 16 * 1024


class NeedData:
    """Sentinel type: the framer needs more bytes."""

    _instance: NeedData | None = None

    def __new__(cls) -> NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


@dataclass(frozen=True, slots=True)
class LinkFrame:
    """One link-layer frame.

    ``payload`` is the DLMS part: the HDLC information field without the LLC
    header, or the M-Bus data after CI (and STSAP/DTSAP for the DLMS transport).
    ``more`` says that further segments of the same APDU follow; ``first`` that
    this frame opens an APDU (HDLC: it carried the LLC header; M-Bus: segment 0).
    """

    link: LinkLayer
    raw: bytes
    payload: bytes
    more: bool = False
    first: bool = True


def _hdlc_address_end(frame: bytes | bytearray, pos: int, end: int) -> int:
    """Position after an HDLC address (1 to 4 bytes, last one has bit 0 set)."""
    for i in range(pos, min(pos + 4, end)):
        if frame[i] & 1:
            return i + 1
    raise FrameError("HDLC address field without an end bit", data=bytes(frame[pos - 3 : end]))


def parse_hdlc(raw: bytes) -> LinkFrame:
    """Check and unpack one whole HDLC frame (flags included)."""
    n = len(raw)
    if n < 9 or raw[0] != HDLC_FLAG or raw[-1] != HDLC_FLAG or raw[1] & 0xF0 != 0xA0:
        raise FrameError("not an HDLC frame", data=raw)
    length = ((raw[1] & 0x07) << 8) | raw[2]
    if length + 2 != n:
        raise FrameError(f"HDLC frame declares {length} bytes but has {n - 2}", data=raw)
    end = n - 1  # index of closing flag
    pos = _hdlc_address_end(raw, 3, end - 3)  # destination
    pos = _hdlc_address_end(raw, pos, end - 3)  # source
    control_end = pos + 1
    if control_end + 2 > end:
        raise FrameError("HDLC frame too short for its header", data=raw)
    body = memoryview(raw)[1:end]
    fcs = int.from_bytes(raw[end - 2 : end], "little")
    info_start = control_end
    if control_end + 2 < end - 2:  # an information field follows: the header has its own HCS
        hcs = int.from_bytes(raw[control_end : control_end + 2], "little")
        if crc16_x25(body[: control_end - 1]) != hcs:
            raise ChecksumError("HDLC header check sequence (HCS) mismatch", data=raw)
        info_start = control_end + 2
    if crc16_x25(body[:-2]) != fcs:
        raise ChecksumError("HDLC frame check sequence (FCS) mismatch", data=raw)
    info = raw[info_start : end - 2]
    first = False
    for llc in LLC_HEADERS:
        if info.startswith(llc):
            info, first = info[3:], True
            break
    return LinkFrame(LinkLayer.HDLC, raw, info, more=bool(raw[1] & 0x08), first=first)


def parse_mbus(raw: bytes) -> LinkFrame:
    """Check and unpack one wired M-Bus long frame ``68 L L 68 C A CI ... CS 16``."""
    n = len(raw)
    if n < 9 or raw[0] != MBUS_START or raw[3] != MBUS_START or raw[1] != raw[2]:
        raise FrameError("not an M-Bus long frame", data=raw)
    if raw[1] + 6 != n or raw[-1] != MBUS_STOP:
        raise FrameError(f"M-Bus frame declares {raw[1]} bytes but has {n - 6}", data=raw)
    if mbus_checksum(raw[4:-2]) != raw[-2]:
        raise ChecksumError("M-Bus checksum mismatch", data=raw)
    ci = raw[6]
    data = raw[7:-2]
    if ci <= 0x1F:
        # DLMS over the M-Bus transport layer (EN 13757-x, as the Austrian and
        # Polish Kaifa/Sagemcom meters send it): CI = FIN bit 0x10 + segment
        # number, then STSAP and DTSAP.
        if len(data) < 2:
            raise FrameError("M-Bus DLMS frame without STSAP/DTSAP", data=raw)
        return LinkFrame(LinkLayer.MBUS, raw, data[2:], more=not ci & 0x10, first=(ci & 0x0F) == 0)
    return LinkFrame(LinkLayer.MBUS, raw, data, more=False, first=True)


_WAIT, _GOOD, _NOT_HDLC, _BAD_HCS = range(4)


def _hdlc_header(buf: bytearray, total: int) -> int:
    """Judge the header of a (maybe partly received) HDLC frame as soon as it is in.

    A garbage byte pair that looks like a frame start may declare up to 2049
    bytes; judging the header first saves waiting for all of them, and judging it
    the same way however the bytes were split keeps the outcome chunk-independent.
    """
    end = min(len(buf), total)
    pos = 3
    for _ in range(2):  # destination, then source address: 1 to 4 bytes, the last has bit 0 set
        for i in range(4):
            if pos + i >= end:
                return _WAIT
            if buf[pos + i] & 1:
                pos += i + 1
                break
        else:
            return _NOT_HDLC
    control_end = pos + 1
    if control_end + 2 >= total - 3:  # no information field, so no HCS
        return _GOOD
    if len(buf) < control_end + 2:
        return _WAIT
    hcs = buf[control_end] | (buf[control_end + 1] << 8)
    return _GOOD if crc16_x25(bytes(buf[1:control_end])) == hcs else _BAD_HCS


class ByteBuffer:
    """The bytes a frame cutter holds, capped at ``max_buffer``; what it skipped."""

    def __init__(self, max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        self._buf = bytearray()
        self._max = max_buffer
        self.skipped = 0  # bytes discarded because no frame could start there

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def reset(self) -> None:
        self._buf.clear()


class Framer(ByteBuffer):
    """Cuts HDLC and/or M-Bus long frames out of a byte stream (sans-IO)."""

    def __init__(self, link: LinkLayer = LinkLayer.AUTO, max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        if link not in (LinkLayer.HDLC, LinkLayer.MBUS, LinkLayer.AUTO):
            raise ValueError(f"the framer cuts hdlc or mbus streams, not {link.value}")
        super().__init__(max_buffer)
        self._hdlc = link in (LinkLayer.HDLC, LinkLayer.AUTO)
        self._mbus = link in (LinkLayer.MBUS, LinkLayer.AUTO)

    def _start(self) -> int:
        """Index of the first byte that could open a frame, or -1."""
        buf = self._buf
        n = len(buf)
        i = 0
        while i < n:
            b = buf[i]
            if self._hdlc and b == HDLC_FLAG and (i + 1 >= n or buf[i + 1] & 0xF0 == 0xA0):
                return i
            if self._mbus and b == MBUS_START and (
                i + 3 >= n or (buf[i + 3] == MBUS_START and buf[i + 1] == buf[i + 2])
            ):
                return i
            i += 1
        return -1

    def _discard(self, count: int) -> None:
        self.skipped += count
        del self._buf[:count]

    def next_frame(self) -> LinkFrame | NeedData:
        while True:
            start = self._start()
            if start < 0:
                keep = 1 if bytes(self._buf[-1:]) in (b"\x7e", b"\x68") else 0
                self._discard(len(self._buf) - keep)
                return NEED_DATA
            if start:
                self._discard(start)
            buf = self._buf
            if len(buf) < 4:
                return NEED_DATA
            if buf[0] == HDLC_FLAG:
                total = (((buf[1] & 0x07) << 8) | buf[2]) + 2
                if total < 9:
                    self._discard(1)
                    continue
            else:
                total = buf[1] + 6
            if buf[0] == HDLC_FLAG:
                header = _hdlc_header(buf, total)
                if header == _NOT_HDLC:
                    self._discard(1)
                    continue
                if header == _BAD_HCS:  # noise in the header, or a false start: do not wait for it
                    self._discard(1)
                    raise ChecksumError("HDLC header check sequence (HCS) mismatch", data=bytes(buf[:16]))
            if len(buf) < total:
                if len(buf) > self._max:
                    kept = len(buf)
                    self._discard(kept)
                    raise BufferOverflowError(
                        f"{kept} bytes buffered without a complete frame: dropped"
                    )
                return NEED_DATA
            end_byte = HDLC_FLAG if buf[0] == HDLC_FLAG else MBUS_STOP
            if buf[total - 1] != end_byte:
                # Not a frame after all (garbage that looked like a start), or a
                # frame whose tail was lost: skip this start byte and rescan.
                self._discard(1)
                continue
            raw = bytes(buf[:total])
            # A candidate that does not parse (garbage that looked like a start, a frame
            # cut short, a corrupt frame) loses only its start byte: a valid frame that
            # begins inside its declared span is still found (line noise must not eat the
            # frame after it). A corrupt frame is reported once, as a ChecksumError.
            try:
                frame = parse_hdlc(raw) if buf[0] == HDLC_FLAG else parse_mbus(raw)
            except ChecksumError:
                self._discard(1)
                raise
            except FrameError:
                self._discard(1)
                continue
            # HDLC: leave the closing flag, it may open the next frame too.
            del buf[: total - 1 if buf[0] == HDLC_FLAG else total]
            return frame


def parse_frame(link: LinkLayer, raw: bytes) -> LinkFrame:
    """Unpack one whole frame as a reader cut it."""
    if link is LinkLayer.HDLC or (link is LinkLayer.AUTO and raw[:1] == b"\x7e"):
        return parse_hdlc(raw)
    if link is LinkLayer.MBUS or (link is LinkLayer.AUTO and raw[:1] == b"\x68"):
        return parse_mbus(raw)
    return LinkFrame(LinkLayer.APDU, raw, raw)
