"""DSMR / P1 telegrams on the line: cut them out of a byte stream and check their CRC.

A telegram runs from ``/XXX5`` (three letters and a digit) to a ``!`` line that
carries the CRC-16/ARC of everything from ``/`` to ``!`` in hex, or nothing
(DSMR 2 and 3). Readers cut telegrams with :class:`TelegramBuffer` without
parsing them; the decoder parses the lines (:mod:`meterpipe.decoder.dsmr`).
"""

from __future__ import annotations

import re
from typing import Final

from meterpipe.common.errors import BufferOverflowError, ChecksumError, FrameError
from meterpipe.common.link.crc import crc16_arc
from meterpipe.common.link.frames import DEFAULT_MAX_BUFFER, NEED_DATA, ByteBuffer, LinkFrame, NeedData
from meterpipe.common.schema import LinkLayer

_START: Final = re.compile(rb"/[A-Za-z]{3}\d")
_END: Final = re.compile(rb"!([0-9A-Fa-f]{4})?\r?\n")
_CRC: Final = re.compile(rb"[0-9A-Fa-f]{4}")
MAX_TELEGRAM: Final = 8 * 1024


class TelegramBuffer(ByteBuffer):
    """Cuts DSMR telegrams out of a byte stream; the same interface as link.Framer."""

    def __init__(self, max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        super().__init__(max(max_buffer, MAX_TELEGRAM))

    def next_frame(self) -> LinkFrame | NeedData:
        start = _START.search(self._buf)
        if start is None:
            keep = 4  # a start may be split across feeds
            if len(self._buf) > keep:
                self.skipped += len(self._buf) - keep
                del self._buf[: len(self._buf) - keep]
            return NEED_DATA
        if start.start():
            self.skipped += start.start()
            del self._buf[: start.start()]
        end = _END.search(self._buf, 1)
        if end is None:
            if len(self._buf) > self._max:
                size = len(self._buf)
                self.skipped += size
                self._buf.clear()
                raise BufferOverflowError(f"{size} bytes of a P1 telegram without its end ('!'): dropped")
            return NEED_DATA
        nested = _START.search(self._buf, 1, end.start())
        if nested is not None:  # the end of the earlier telegram was lost
            self.skipped += nested.start()
            del self._buf[: nested.start()]
            raise FrameError("P1 telegram cut short: a new one started before its '!' line")
        raw = bytes(self._buf[: end.end()])
        del self._buf[: end.end()]
        return LinkFrame(LinkLayer.DSMR, raw, raw)



def check_telegram(raw: bytes) -> None:
    """Raise ChecksumError unless the telegram's CRC (when it has one) matches."""
    end = raw.rfind(b"!")
    crc = raw[end + 1 : end + 5]
    if end < 0:
        raise FrameError("P1 telegram without its '!' line", data=raw[:24])
    if _CRC.fullmatch(crc) and crc16_arc(raw[: end + 1]) != int(crc, 16):
        raise ChecksumError("P1 telegram CRC mismatch: noise on the line, or a wrong baud rate", data=raw[:24])
