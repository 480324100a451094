"""The decoder process loop: PULL frames, decode per meter, PUB readings and status.

Sockets are created by the caller (decoder.main) and injected, so tests can use
inproc:// endpoints. Nothing a meter or a reader sends stops the loop: bad
messages and rejected frames are counted, logged (summarised), and reported on
``status/<meter>``. :meth:`DecoderService.reconfigure` takes a new list of meters
while running (the settings page added one, or changed a key: decoder.main calls it
on SIGHUP); meters it does not change keep their decoder, status and sequence.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import zmq

from meterpipe.common.config import MeterConfig
from meterpipe.common.errors import MeterpipeError, SchemaError
from meterpipe.common.process import POLL_MS, drain
from meterpipe.common.schema import (
    ReadingsMessage,
    decode_frame,
    decode_replay_request,
    encode_readings,
    encode_replay_reply,
    encode_status,
    reading_topic,
    status_topic,
)
from meterpipe.common.values import Push
from meterpipe.decoder.replay import ReplayBuffer
from meterpipe.decoder.session import MeterDecoder
from meterpipe.decoder.status import MeterStatus

log = logging.getLogger(__name__)

# The settings of a meter its MeterDecoder and MeterStatus are made from.
DECODER_FIELDS = ("key", "auth_key", "link", "model", "push_interval")


@dataclass(frozen=True, slots=True)
class Reconfigured:
    """What :meth:`DecoderService.reconfigure` changed: meter names and setting names, never a value."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (meter, names of the settings that changed)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def summary(self) -> str:
        parts = [f"added {', '.join(self.added)}"] if self.added else []
        if self.removed:
            parts.append(f"removed {', '.join(self.removed)}")
        parts += [f"{meter}: {', '.join(names)} changed" for meter, names in self.changed]
        return "; ".join(parts) or "no meter changed"


class DecoderService:
    def __init__(
        self,
        meters: Iterable[MeterConfig],
        pull: zmq.Socket[bytes],
        pub: zmq.Socket[bytes],
        *,
        clock: Callable[[], int] = time.time_ns,
        status_interval_ns: int = 10_000_000_000,
        replay: zmq.Socket[bytes] | None = None,
        replay_capacity: int | None = None,
    ) -> None:
        self._pull = pull
        self._pub = pub
        self._replay_socket = replay
        self.replay = ReplayBuffer(replay_capacity) if replay_capacity else ReplayBuffer()
        self._clock = clock
        self._status_interval_ns = status_interval_ns
        self._meters: dict[str, MeterConfig] = {}
        self._decoders: dict[str, MeterDecoder] = {}
        self._status: dict[str, MeterStatus] = {}
        self._seq: dict[str, int] = {}
        self._frames_before: dict[str, int] = {}  # frames_ok of a meter's replaced decoders
        self._logged_kinds: set[tuple[str, str]] = set()
        self._unknown: set[str] = set()
        self.bad_messages = 0
        for m in meters:
            self._add(m)

    @property
    def meters(self) -> tuple[str, ...]:
        return tuple(self._meters)

    def _add(self, m: MeterConfig) -> None:
        self._meters[m.name] = m
        self._decoders[m.name] = _decoder(m)
        self._status[m.name] = MeterStatus(
            m.name,
            push_interval_ns=int(m.push_interval * 1e9),
            interval_ns=self._status_interval_ns,
            started_ns=self._clock(),
        )
        self._seq[m.name] = 0
        self._frames_before[m.name] = 0
        self._unknown.discard(m.name)

    def reconfigure(self, meters: Iterable[MeterConfig]) -> Reconfigured:
        """Decode for ``meters`` from now on: new ones get a decoder, removed ones lose theirs, a
        meter whose keys, link layer, model or push interval changed gets a fresh decoder (its
        status counters and reading sequence carry on), the others are left alone."""
        wanted = {m.name: m for m in meters}
        removed = tuple(name for name in self._meters if name not in wanted)
        for name in removed:
            for table in (self._meters, self._decoders, self._status, self._seq, self._frames_before):
                del table[name]
            self._logged_kinds = {k for k in self._logged_kinds if k[0] != name}
        added: list[str] = []
        changed: list[tuple[str, tuple[str, ...]]] = []
        for name, m in wanted.items():
            old = self._meters.get(name)
            if old is None:
                self._add(m)
                added.append(name)
                continue
            self._meters[name] = m
            names = tuple(f for f in DECODER_FIELDS if getattr(old, f) != getattr(m, f))
            if not names:
                continue
            changed.append((name, names))
            self._frames_before[name] += self._decoders[name].frames_ok
            self._decoders[name] = _decoder(m)
            self._status[name].retime(int(m.push_interval * 1e9))
            self._logged_kinds = {k for k in self._logged_kinds if k[0] != name}  # a new key's errors show again
        result = Reconfigured(tuple(added), removed, tuple(changed))
        log.info("meters re-read: %s", result.summary())
        return result

    def run(self, stop: Callable[[], bool], *, reload: Callable[[], Iterable[MeterConfig] | None] | None = None,
            wakeup: int | None = None) -> None:
        """Decode until ``stop()``. ``reload`` is asked once per turn: new meters, or None for no
        change; ``wakeup`` (a descriptor that turns readable on a signal) ends a turn's wait early."""
        poller = zmq.Poller()
        poller.register(self._pull, zmq.POLLIN)
        if self._replay_socket is not None:
            poller.register(self._replay_socket, zmq.POLLIN)
        if wakeup is not None:
            poller.register(wakeup, zmq.POLLIN)
        while not stop():
            events = dict(poller.poll(POLL_MS))
            if wakeup is not None and wakeup in events:
                drain(wakeup)
            if reload is not None and (meters := reload()) is not None:
                self.reconfigure(meters)
            if self._pull in events:
                # drain what is there without blocking, then look at the clock
                for _ in range(1000):
                    try:
                        payload = self._pull.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.handle(payload)
            if self._replay_socket is not None and self._replay_socket in events:
                self.answer_replay(self._replay_socket.recv())
            self.publish_status(self._clock())

    def answer_replay(self, request: bytes) -> None:
        """A restarted publisher asks for what it missed (decoder/replay.py)."""
        assert self._replay_socket is not None
        try:
            since = decode_replay_request(request)
        except SchemaError as exc:
            log.warning("replay request that does not match the wire schema: %s", exc)
            since = {}
        missed = self.replay.since(since)
        if missed:
            log.info("replaying %d push(es) to a publisher that restarted", len(missed))
        self._replay_socket.send(encode_replay_reply(missed))

    def handle(self, payload: bytes) -> None:
        try:
            frame = decode_frame(payload)
        except SchemaError as exc:
            self.bad_messages += 1
            if self.bad_messages == 1 or self.bad_messages % 1000 == 0:
                log.warning("ignored %d message(s) that are not meterpipe frames: %s", self.bad_messages, exc)
            return
        decoder = self._decoders.get(frame.meter)
        if decoder is None:
            if frame.meter not in self._unknown:
                self._unknown.add(frame.meter)
                log.warning("frames from meter %r, which is not in the config: ignored", frame.meter)
            return
        status = self._status[frame.meter]
        lost = status.frame(frame.seq, len(frame.data), frame.dropped, frame.received_ns)
        if lost:
            log.warning("meter %s: %d frame(s) lost between reader and decoder", frame.meter, lost)
        for outcome in decoder.feed_frame(frame.data, frame.link, frame.received_ns):
            if isinstance(outcome, Push):
                self._seq[frame.meter] += 1
                message = ReadingsMessage(frame.meter, self._seq[frame.meter], frame.received_ns, outcome, frame.seq)
                payload = encode_readings(message)
                self._pub.send_multipart([reading_topic(frame.meter), payload])
                self.replay.add(frame.meter, frame.received_ns, payload)
                status.push(frame.received_ns)
            else:
                self._rejected(frame.meter, outcome, status)
        status.frames_decoded(self._frames_before[frame.meter] + decoder.frames_ok)

    def _rejected(self, meter: str, exc: MeterpipeError, status: MeterStatus) -> None:
        status.error(exc)
        key = (meter, exc.kind)
        if key in self._logged_kinds:
            log.debug("meter %s: %s: %s [%s]", meter, exc.kind, exc.message, exc.excerpt)
        else:
            self._logged_kinds.add(key)
            log.warning("meter %s: %s: %s (further %s errors are counted on status/%s)", meter, exc.kind, exc.message, exc.kind, meter)

    def publish_status(self, now_ns: int) -> None:
        for meter, status in self._status.items():
            message = status.due(now_ns)
            if message is not None:
                self._pub.send_multipart([status_topic(meter), encode_status(message)])


def _decoder(m: MeterConfig) -> MeterDecoder:
    return MeterDecoder(m.name, key=m.key, auth_key=m.auth_key, link=m.link, model=m.model)
