"""One meter's decoder: bytes or frames in, pushes (or errors) out.

Sans-IO: no sockets, no clock (the caller passes receive times), no logging
set-up. The layers, each its own module:

    link.Framer          bytes -> HDLC / M-Bus frames          (FrameError, ChecksumError)
    reassembly           segments and GBT blocks -> one APDU   (SequenceError)
    security             general-glo/ded-ciphering -> plaintext (DecryptError, AuthError)
    replay check here    invocation counter per system title   (ReplayError)
    apdu                 notification header -> body bytes     (TruncatedError, UnsupportedError)
    mapper               body -> named readings with units     (TruncatedError, UnsupportedError)
                         (one PushMapper per meter; axdr / gurux_adapter parse, mapping names)

``feed`` returns a list of outcomes in stream order: a :class:`Push` for each
decoded push and a :class:`MeterpipeError` for each rejected frame or push.
Nothing a meter sends raises out of it; the caller counts, reports, carries on.
"""

from __future__ import annotations

import logging

from meterpipe.common.errors import DecryptError, FrameError, MeterpipeError, ReplayError
from meterpipe.common.link.cutter import make_framer
from meterpipe.common.link.frames import DEFAULT_MAX_BUFFER, LinkFrame, NeedData, parse_frame
from meterpipe.common.schema import LinkLayer
from meterpipe.common.values import Push
from meterpipe.decoder.apdu import notification_header
from meterpipe.decoder.dsmr import parse_telegram
from meterpipe.decoder.mapper import PushMapper
from meterpipe.decoder.reassembly import DEFAULT_GAP_NS, GBT_TAG, BlockAssembler, SegmentAssembler
from meterpipe.decoder.security import CIPHERED_TAGS, decrypt, parse_ciphered

log = logging.getLogger(__name__)

Outcome = Push | MeterpipeError


class MeterDecoder:
    """Per-meter decoding state: partial pushes, keys, invocation counters."""

    def __init__(
        self,
        meter: str,
        *,
        key: bytes | None = None,
        auth_key: bytes | None = None,
        link: LinkLayer = LinkLayer.AUTO,
        model: str | None = None,
        gap_ns: int = DEFAULT_GAP_NS,
        max_buffer: int = DEFAULT_MAX_BUFFER,
    ) -> None:
        self.meter = meter
        self._key = key
        self._auth_key = auth_key
        self._framer = make_framer(link, max_buffer)
        self._segments = SegmentAssembler(gap_ns)
        self._blocks = BlockAssembler(gap_ns)
        self._counters: dict[bytes, int] = {}
        self.mapper = PushMapper(model)
        self._told_unauthenticated = False
        self.frames_ok = 0

    def __repr__(self) -> str:  # keys stay out of every repr
        return f"MeterDecoder({self.meter!r}, model={self.model!r})"

    @property
    def model(self) -> str | None:
        """The configured model hint (None: identified from the pushes)."""
        return self.mapper.model

    @property
    def skipped_bytes(self) -> int:
        """Bytes the framer passed over because no frame could start there."""
        return self._framer.skipped

    def reset_replay_state(self) -> None:
        """Forget invocation counters (benchmarks replaying one capture; tests)."""
        self._counters.clear()

    def reset(self) -> None:
        """Drop partial frames and pushes (after a reconnect, say)."""
        self._framer.reset()
        self._segments.reset()
        self._blocks.reset()

    # --- entry points -----------------------------------------------------------

    def feed(self, data: bytes, now_ns: int = 0) -> list[Outcome]:
        """Feed a chunk of the meter's byte stream (any split)."""
        self._framer.feed(data)
        out: list[Outcome] = []
        while True:
            try:
                frame = self._framer.next_frame()
            except FrameError as exc:
                out.append(exc.for_meter(self.meter))
                continue
            if isinstance(frame, NeedData):
                return out
            self._on_frame(frame, now_ns, out)

    def feed_frame(self, raw: bytes, link: LinkLayer, now_ns: int = 0) -> list[Outcome]:
        """Feed one whole frame as a reader cut it."""
        out: list[Outcome] = []
        try:
            frame = LinkFrame(LinkLayer.DSMR, raw, raw) if link is LinkLayer.DSMR else parse_frame(link, raw)
        except FrameError as exc:
            return [exc.for_meter(self.meter)]
        if frame.link is LinkLayer.APDU:
            self.frames_ok += 1  # a bare APDU is its own frame
            self._on_apdu(raw, now_ns, out)
        else:
            self._on_frame(frame, now_ns, out)
        return out

    def feed_apdu(self, apdu: bytes, now_ns: int = 0) -> list[Outcome]:
        """Feed one bare APDU (no link layer)."""
        out: list[Outcome] = []
        self._on_apdu(apdu, now_ns, out)
        return out

    # --- layers -----------------------------------------------------------------

    def _on_frame(self, frame: LinkFrame, now_ns: int, out: list[Outcome]) -> None:
        self.frames_ok += 1
        if frame.link is LinkLayer.DSMR:
            try:
                out.append(parse_telegram(frame.raw))
            except MeterpipeError as exc:
                out.append(exc.for_meter(self.meter))
            return
        try:
            apdu, abandoned = self._segments.add(frame, now_ns)
        except MeterpipeError as exc:  # SequenceError, or TruncatedError for a push over MAX_APDU
            out.append(exc.for_meter(self.meter))
            return
        if abandoned is not None:
            out.append(abandoned.for_meter(self.meter))
        if apdu is not None:
            self._on_apdu(apdu, now_ns, out)

    def _on_apdu(self, apdu: bytes, now_ns: int, out: list[Outcome]) -> None:
        try:
            if apdu[:1] == bytes((GBT_TAG,)):
                inner, abandoned = self._blocks.add(apdu, now_ns)
                if abandoned is not None:
                    out.append(abandoned.for_meter(self.meter))
                if inner is None:
                    return
                apdu = inner
            out.append(self._decode(apdu))
        except MeterpipeError as exc:
            out.append(exc.for_meter(self.meter))

    def _decode(self, apdu: bytes) -> Push:
        system_title: bytes | None = None
        counter: int | None = None
        encrypted = authenticated = False
        if apdu[:1] and apdu[0] in CIPHERED_TAGS:
            ciphered = parse_ciphered(apdu)
            system_title, counter = ciphered.system_title, ciphered.invocation_counter
            apdu, authenticated = decrypt(ciphered, self._key, self._auth_key)
            encrypted = ciphered.encrypted
            self._check_replay(system_title, counter)  # recorded below, once the push decoded
            if ciphered.authenticated and not authenticated:
                self._tell_unauthenticated()
        try:
            _, notification_time, pos = notification_header(apdu)
            mapped = self.mapper.map(apdu[pos:])
        except MeterpipeError as exc:
            if encrypted and not authenticated:
                raise DecryptError(
                    f"decrypted push does not parse ({exc}): check the encryption key (key)"
                ) from exc
            raise
        if system_title is not None and counter is not None:
            self._counters[system_title] = counter
        return Push(
            readings=mapped.readings,
            meter_id=mapped.meter_id,
            system_title=system_title.hex().upper() if system_title else None,
            time=mapped.time or notification_time,  # the clock object, as the reference does
            encrypted=encrypted,
            authenticated=authenticated,
            invocation_counter=counter,
        )

    def _check_replay(self, system_title: bytes, counter: int) -> None:
        last = self._counters.get(system_title)
        if last is not None and counter <= last:
            raise ReplayError(
                f"invocation counter {counter} not above the last accepted {last} "
                f"(system title {system_title.hex().upper()}): replayed or reordered push rejected"
            )

    def _tell_unauthenticated(self) -> None:
        if not self._told_unauthenticated:
            self._told_unauthenticated = True
            log.warning(
                "meter %s: pushes carry an authentication tag but no auth_key is configured; "
                "decrypting without checking authenticity (readings are marked unauthenticated). "
                "Ask the grid operator for the authentication key and set auth_key.",
                self.meter,
            )
