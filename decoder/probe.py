"""The meter probe behind the settings page's "Test this meter" button (sans-IO).

A :class:`Probe` runs the pipeline's own two stages on one meter's byte stream and
counts what comes out of each, so it can never disagree with the running pipeline:

    bytes --> common.link.cutter.make_framer(meter.link)   the reader's framer  --> frames  (ChecksumError, FrameError)
          --> session.MeterDecoder.feed_frame               the decoder's session --> Push    (DecryptError, AuthError, ...)

:meth:`Probe.report` sums it up in a :class:`ProbeReport`: counters per stage,
whether the pushes were encrypted and decrypted, the readings of the last push,
the errors grouped by kind with their advice, and a one-line verdict a person
can act on. The caller owns the port and the clock (``web/probe_run.py``).

Keys never reach the report: errors carry messages, never the excerpts of the
bytes involved, and the decoder's messages never hold key material.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from meterpipe.common.config import MeterConfig
from meterpipe.common.errors import ChecksumError, FrameError, MeterpipeError
from meterpipe.common.link.cutter import FrameCutter, make_framer
from meterpipe.common.link.frames import LinkFrame, NeedData
from meterpipe.common.schema import LinkLayer
from meterpipe.common.values import Push
from meterpipe.decoder.session import MeterDecoder

SAMPLE_BYTES: Final = 8 * 1024  # bytes kept to tell a wrong link layer setting when no frame is found
MAX_ERROR_ENTRIES: Final = 12  # distinct (kind, message) rows before further messages fold into their kind's row
PORT_KIND: Final = "port"  # the port went away while listening (not an error of the bytes)
_SECURITY_KINDS: Final = ("decrypt", "auth")

# What to do about each kind of error, as the settings page shows it beside the message.
# An error class that carries its own ``advice`` text wins over this table.
ADVICE: Final = MappingProxyType({
    "checksum": "frames arrive damaged: check the baud rate and parity, and the cable (noise, a loose contact)",
    "truncated": "frames are cut short or never end: check the baud rate, parity and the link layer setting",
    "sequence": "parts of a push were lost or came out of order: check the cable and the baud rate",
    "decrypt": "check the encryption key (key) of this meter: 32 hex digits, handed out by the grid operator",
    "auth": "check the encryption key (key) and the authentication key (auth_key): "
            "a failed tag check cannot tell which of the two is wrong",
    "replay": "the meter repeated an invocation counter: is a second reader or a replayed capture on the line?",
    "unsupported": "meterpipe cannot read this push layout: set the meter model if it is listed, "
                   "or report the meter with a capture",
    PORT_KIND: "check the cable and the adapter: the port went away while listening",
})


HOPELESS_AFTER = 3  # pushes failing to decrypt in a row: the key is wrong, no need to wait the full time


def advice_for(exc: MeterpipeError) -> str:
    """The advice for an error: its class's own ``advice`` text, else :data:`ADVICE` for its kind."""
    own = getattr(exc, "advice", None)
    if isinstance(own, str) and own:
        return own
    return ADVICE.get(exc.kind, "")


def _count(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


@dataclass(slots=True)
class ProbeReport:
    """What arrived at each stage while the probe listened; JSON for the settings page."""

    port: str
    seconds: float  # how long it listened
    opened: bool
    open_error: str | None  # one line, e.g. "cannot open /dev/ttyUSB0: no such device ..."
    bytes: int
    frames: int  # frames the link layer found (HDLC/M-Bus frames, P1 telegrams)
    checksum_errors: int
    pushes: int  # complete pushes decoded
    encrypted: bool | None  # None: nothing seen yet
    decrypted: bool | None  # None when not encrypted or nothing seen
    readings: list[dict[str, object]] = field(default_factory=list)  # of the last push: name, obis, value, unit
    errors: list[dict[str, object]] = field(default_factory=list)  # kind, message, advice, count
    verdict: str = ""

    def as_json(self) -> dict[str, object]:
        return {
            "port": self.port,
            "seconds": self.seconds,
            "opened": self.opened,
            "open_error": self.open_error,
            "bytes": self.bytes,
            "frames": self.frames,
            "checksum_errors": self.checksum_errors,
            "pushes": self.pushes,
            "encrypted": self.encrypted,
            "decrypted": self.decrypted,
            "readings": [dict(r) for r in self.readings],
            "errors": [dict(e) for e in self.errors],
            "verdict": self.verdict,
        }


def open_failed(meter: MeterConfig, reason: str, seconds: float = 0.0) -> ProbeReport:
    """The report of a probe whose port did not open; ``reason`` is one line."""
    reason = " ".join(reason.split())
    return ProbeReport(
        port=meter.port, seconds=round(seconds, 1), opened=False, open_error=reason, bytes=0, frames=0,
        checksum_errors=0, pushes=0, encrypted=None, decrypted=None,
        verdict=reason,
    )


class _ErrorTable:
    """Errors grouped by (kind, message) in order of first appearance, bounded in size."""

    def __init__(self) -> None:
        self.rows: list[dict[str, object]] = []
        self._index: dict[tuple[str, str], int] = {}
        self._by_kind: dict[str, int] = {}
        self.kinds: dict[str, int] = {}  # kind -> count

    def add(self, kind: str, message: str, advice: str) -> None:
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if advice and advice.split(":", 1)[0] in message:
            advice = ""  # the message already says it (the decoder's messages carry their advice)
        at = self._index.get((kind, message))
        if at is None and len(self.rows) >= MAX_ERROR_ENTRIES:
            at = self._by_kind.get(kind)  # replay messages name their counter: do not grow a row per push
        if at is None:
            at = len(self.rows)
            self.rows.append({"kind": kind, "message": message, "advice": advice, "count": 0})
            self._index[(kind, message)] = at
            self._by_kind.setdefault(kind, at)
        row = self.rows[at]
        row["count"] = int(str(row["count"])) + 1

    def latest(self, kind: str) -> str:
        for row in reversed(self.rows):
            if row["kind"] == kind:
                return str(row["message"])
        return ""


class Probe:
    """One meter's bytes through the reader's framer and the decoder's session, counted per stage."""

    def __init__(self, meter: MeterConfig) -> None:
        self.meter = meter
        self._framer = make_framer(meter.link)  # as reader.service.ReaderService cuts
        # as decoder.service.DecoderService decodes
        self._decoder = MeterDecoder(meter.name, key=meter.key, auth_key=meter.auth_key, link=meter.link,
                                     model=meter.model)
        self._errors = _ErrorTable()
        self._sample = bytearray()
        self._last: Push | None = None
        self._lost: str | None = None
        self.bytes = 0
        self.frames = 0
        self.checksum_errors = 0
        self.pushes = 0
        self.encrypted_pushes = 0
        self.security_errors = 0

    def __repr__(self) -> str:  # keys stay out of every repr
        return f"Probe({self.meter.name!r}, port={self.meter.port!r})"

    @property
    def done(self) -> bool:
        """At least one push decoded."""
        return self.pushes > 0

    @property
    def hopeless(self) -> bool:
        """No push, and the same key error :data:`HOPELESS_AFTER` times: listening longer tells nothing new."""
        return not self.done and any(self._errors.kinds.get(k, 0) >= HOPELESS_AFTER for k in ("decrypt", "auth"))

    def feed(self, data: bytes, now_ns: int) -> None:
        """Bytes as they came off the port (any split), received at ``now_ns``."""
        if not data:
            return
        self.bytes += len(data)
        if len(self._sample) < SAMPLE_BYTES:
            self._sample += data[: SAMPLE_BYTES - len(self._sample)]
        self._framer.feed(data)
        while True:
            try:
                frame = self._framer.next_frame()
            except FrameError as exc:  # the reader counts these and carries on
                self._error(exc)
                continue
            if isinstance(frame, NeedData):
                return
            self.frames += 1
            for outcome in self._decoder.feed_frame(frame.raw, frame.link, now_ns):
                if isinstance(outcome, Push):
                    self._push(outcome)
                else:
                    self._error(outcome)

    def lost(self, reason: str) -> None:
        """The port failed while listening (``reason``: one line, as reader.port.describe_error gives it)."""
        self._lost = " ".join(reason.split())
        self._errors.add(PORT_KIND, f"port lost: {self._lost}", ADVICE[PORT_KIND])

    def _push(self, push: Push) -> None:
        self.pushes += 1
        self._last = push
        if push.encrypted:
            self.encrypted_pushes += 1

    def _error(self, exc: MeterpipeError) -> None:
        if isinstance(exc, ChecksumError) or exc.kind == "checksum":  # link layer, or a P1 telegram's CRC
            self.checksum_errors += 1
        if exc.kind in _SECURITY_KINDS:
            self.security_errors += 1
        self._errors.add(exc.kind, exc.message, advice_for(exc))

    # --- the report -------------------------------------------------------------

    def report(self, seconds: float) -> ProbeReport:
        """The state so far, after listening ``seconds``."""
        encrypted: bool | None = None  # nothing decoded and no ciphering error: the bytes do not say yet
        if self.encrypted_pushes or self.security_errors:
            encrypted = True
        elif self.pushes:
            encrypted = False
        decrypted: bool | None = None
        if encrypted:
            decrypted = self.encrypted_pushes > 0
        last = self._last
        return ProbeReport(
            port=self.meter.port,
            seconds=round(seconds, 1),
            opened=True,
            open_error=None,
            bytes=self.bytes,
            frames=self.frames,
            checksum_errors=self.checksum_errors,
            pushes=self.pushes,
            encrypted=encrypted,
            decrypted=decrypted,
            readings=[] if last is None else [r.as_json() for r in last.readings],
            errors=[dict(row) for row in self._errors.rows],
            verdict=self._verdict(seconds),
        )

    def _verdict(self, seconds: float) -> str:
        if self.pushes:
            text = f"OK: {_count(self.pushes, 'push', 'pushes')} decoded"
            if self.encrypted_pushes:
                text += " and decrypted"
            return text
        lost = f" (the port was lost: {self._lost})" if self._lost else ""
        if not self.bytes:
            return (f"no bytes arrived in {seconds:.0f} s{lost}: check the cable, the port and the baud rate, "
                    "and that the grid operator has enabled the meter's customer interface")
        if not self.frames:
            other = self._other_link()
            if other is not None:
                return (f"bytes arrive but no {self.meter.link.value} frames: they look like {other.value} "
                        f"frames; set the link layer to {other.value}")
            if self.checksum_errors:
                return ("bytes arrive but every frame fails its checksum: check the baud rate and parity "
                        "(or noise on the cable)")
            return ("bytes arrive but hold no frames: check the baud rate, parity and link layer "
                    f"({_count(self.bytes, 'byte')} in {seconds:.0f} s{lost})")
        return self._frames_verdict(seconds, lost)

    def _frames_verdict(self, seconds: float, lost: str) -> str:
        kinds = self._errors.kinds
        if self.security_errors:
            if self.meter.key is None:
                return "frames arrive encrypted but no key is set: enter the meter's encryption key (key)"
            if kinds.get("auth", 0) >= kinds.get("decrypt", 0):
                return "frames arrive but fail authentication: wrong key or authentication key (auth_key)?"
            return "frames arrive but do not decrypt: wrong key?"
        decode_kinds = {k: n for k, n in kinds.items() if k != PORT_KIND}
        if not decode_kinds:
            return (f"{_count(self.frames, 'frame')} arrived but no complete push yet{lost}: listen longer "
                    f"(the meter is expected to push every {self.meter.push_interval:g} s)")
        top = max(decode_kinds, key=lambda k: decode_kinds[k])
        if top == "checksum":
            return ("frames arrive but most fail their checksum: check the baud rate and parity "
                    "(or noise on the cable)")
        return f"frames arrive but do not decode ({top}): {self._errors.latest(top)}"

    def _other_link(self) -> LinkLayer | None:
        """The link layer the sampled bytes hold frames of, when it is not the configured one."""
        link = self.meter.link
        covered = {link} | ({LinkLayer.HDLC, LinkLayer.MBUS} if link is LinkLayer.AUTO else set())
        for candidate in (LinkLayer.AUTO, LinkLayer.DSMR):
            found = _first_frame(make_framer(candidate), bytes(self._sample))
            if found is not None and found not in covered:
                return found
        return None


def _first_frame(cutter: FrameCutter, data: bytes) -> LinkLayer | None:
    cutter.feed(data)
    while True:
        try:
            frame = cutter.next_frame()
        except FrameError:
            continue
        if isinstance(frame, LinkFrame):
            return frame.link
        return None
