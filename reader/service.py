"""The reader's loop: port bytes -> link-layer frames -> Frame messages -> PUSH socket.

Everything with a side effect is injected (the socket, the port opener, the clocks),
so tests drive :class:`ReaderService` with ptys and ``inproc://``/``ipc://`` sockets
and ``main()`` builds the real parts. One :meth:`ReaderService.step` never blocks
longer than about 0.2 s, so a stop request is seen quickly, also while the port is
away (backoff) or the decoder is away (queue).

The reader never decodes: it cuts frames with the project's one framer
(:class:`meterpipe.common.link.frames.Framer`), stamps each with the meter name, a
sequence number (from 1, consecutive for the life of the process, across port
reconnects) and the receive time, and sends the whole raw frame.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

import zmq

from meterpipe.common.config import MeterConfig
from meterpipe.common.curve_keys import secure_frames_client
from meterpipe.common.endpoints import EndpointsConfig
from meterpipe.common.errors import ChecksumError, FrameError
from meterpipe.common.link.cutter import make_framer
from meterpipe.common.link.frames import LinkFrame
from meterpipe.common.process import Backoff
from meterpipe.common.schema import Frame
from meterpipe.reader.outbox import Outbox, PushSocket
from meterpipe.reader.port import PortKeeper, SerialLike

log = logging.getLogger(__name__)

TICK: Final = 0.2  # longest wait of one step, in seconds
SUMMARY_INTERVAL: Final = 60.0  # seconds between frame-error summaries
SNDHWM: Final = 1000
LINGER_MS: Final = 2000
STOP_FLUSH: Final = 1.0  # seconds spent sending queued frames at stop


def connect_frames_socket(
    ctx: zmq.Context[zmq.Socket[bytes]], endpoints: str | EndpointsConfig
) -> zmq.Socket[bytes]:
    """The reader's PUSH socket, connected to the decoder's PULL.

    ``IMMEDIATE`` makes a send with no decoder connected fail at once (``zmq.Again``)
    instead of filling a hidden per-connection queue, so the outbox is the one
    bounded queue and every drop is counted. Given the whole EndpointsConfig, the
    socket is a CurveZMQ client when ``curve_server_public`` is set.
    """
    config = endpoints if isinstance(endpoints, EndpointsConfig) else None
    endpoint = config.frames if config is not None else str(endpoints)
    sock: zmq.Socket[bytes] = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, LINGER_MS)
    sock.setsockopt(zmq.SNDHWM, SNDHWM)
    sock.setsockopt(zmq.IMMEDIATE, 1)
    if config is not None:
        try:
            secure_frames_client(sock, config)
        except BaseException:
            sock.close(0)
            raise
    sock.connect(endpoint)
    return sock


class FrameErrorLog:
    """Counts framing errors; each at debug, a summary at warning at most once a minute."""

    def __init__(self, meter: str, monotonic: Callable[[], float], interval: float = SUMMARY_INTERVAL) -> None:
        self._meter = meter
        self._monotonic = monotonic
        self._interval = interval
        self._since = monotonic()
        self._checksum = 0
        self._other = 0
        self._last = ""
        self.total = 0

    def record(self, exc: FrameError) -> None:
        self.total += 1
        if isinstance(exc, ChecksumError):
            self._checksum += 1
        else:
            self._other += 1
        self._last = exc.message
        log.debug("meter %s: frame dropped: %s [%s]", self._meter, exc.message, exc.excerpt)

    def maybe_summarise(self, skipped_bytes: int) -> None:
        now = self._monotonic()
        if now - self._since < self._interval:
            return
        if self._checksum or self._other:
            log.warning(
                "meter %s: %d bad frames in the last %.0f s (%d checksum, %d malformed; %d stray bytes "
                "skipped so far); last: %s",
                self._meter,
                self._checksum + self._other,
                now - self._since,
                self._checksum,
                self._other,
                skipped_bytes,
                self._last,
            )
        self._since = now
        self._checksum = self._other = 0


class ReaderService:
    """One meter's reader loop with injected socket and port."""

    def __init__(
        self,
        meter: MeterConfig,
        socket: PushSocket,
        open_port: Callable[[], SerialLike],
        clock: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        backoff: Backoff | None = None,
    ) -> None:
        self.meter = meter
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._framer = make_framer(meter.link)
        self.outbox = Outbox(socket, max(1, meter.queue_frames), meter.name)
        self.port = PortKeeper(meter.port, open_port, backoff, monotonic)
        self._errors = FrameErrorLog(meter.name, monotonic)
        self._opens_seen = 0
        self.seq = 0  # sequence number of the last frame cut
        self.bytes_read = 0

    @property
    def frame_errors(self) -> int:
        return self._errors.total

    def step(self) -> None:
        """Read what the port has (waiting at most ~TICK), send the frames cut, retry the queue."""
        data = self.port.read()
        if data is None:  # port away: keep serving the queue while the backoff runs
            wait = min(TICK, self.port.retry_in())
            if self.outbox.pending:
                self.outbox.flush(max(1, int(wait * 1000)))
            elif wait > 0:
                self._sleep(wait)
        else:
            if self.port.opens != self._opens_seen:
                # A fresh byte stream: a frame half-read from the old port is garbage.
                self._opens_seen = self.port.opens
                self._framer.reset()
            if data:
                self.bytes_read += len(data)
                self._framer.feed(data)
                self._cut_frames()
            if self.outbox.pending:
                self.outbox.flush()
        self._errors.maybe_summarise(self._framer.skipped)

    def _cut_frames(self) -> None:
        while True:
            try:
                frame = self._framer.next_frame()
            except FrameError as exc:  # checksum, overflow: count, log, carry on
                self._errors.record(exc)
                continue
            if not isinstance(frame, LinkFrame):
                return
            self._emit(frame)

    def _emit(self, frame: LinkFrame) -> None:
        self.seq += 1
        self.outbox.put(
            Frame(
                meter=self.meter.name,
                seq=self.seq,
                received_ns=self._clock(),
                link=frame.link,
                data=frame.raw,
                dropped=self.outbox.dropped,
            )
        )

    def run(self, stop: Callable[[], bool]) -> None:
        """Step until ``stop()`` is true, then send what is queued (up to 1 s) and close the port."""
        log.info("meter %s: reading %s (link %s)", self.meter.name, self.meter.port, self.meter.link.value)
        try:
            while not stop():
                self.step()
        finally:
            self.port.close()
        self.outbox.drain(STOP_FLUSH, self._monotonic)
        log.info(
            "meter %s: stopped after %d frames (%d sent, %d dropped, %d bad)",
            self.meter.name,
            self.seq,
            self.outbox.sent,
            self.outbox.dropped,
            self.frame_errors,
        )
