"""The frame cutter for a configured link layer: one call for readers and decoder alike."""

from __future__ import annotations

from typing import Protocol

from meterpipe.common.link.frames import DEFAULT_MAX_BUFFER, Framer, LinkFrame, NeedData
from meterpipe.common.schema import LinkLayer


class FrameCutter(Protocol):
    """What link.Framer and dsmr.TelegramBuffer share (sans-IO, h11 style)."""

    skipped: int

    @property
    def buffered(self) -> int: ...

    def feed(self, data: bytes) -> None: ...

    def reset(self) -> None: ...

    def next_frame(self) -> LinkFrame | NeedData: ...


def make_framer(link: LinkLayer, max_buffer: int = DEFAULT_MAX_BUFFER) -> FrameCutter:
    """DSMR telegrams for ``dsmr``; HDLC and/or M-Bus frames otherwise (bare APDUs
    have no framing on a serial line, so ``apdu`` and ``auto`` look for both)."""
    if link is LinkLayer.DSMR:
        from meterpipe.common.link.p1 import TelegramBuffer  # P1 meters only: an HDLC reader never loads it

        return TelegramBuffer(max_buffer)
    return Framer(link if link in (LinkLayer.HDLC, LinkLayer.MBUS) else LinkLayer.AUTO, max_buffer)
