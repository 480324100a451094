"""The reader's bounded queue in front of its PUSH socket.

Frames are sent with ``zmq.NOBLOCK``, so the reader never stops reading its port
because the decoder is away. When the socket would block, frames wait here in
order (at most ``capacity`` of them) and go out as soon as the socket is writable
again; when the queue is full the oldest frame is dropped and counted. Every frame
sent carries the count of frames dropped so far in ``Frame.dropped``, stamped when
it leaves (so the decoder sees drops that happened while it waited).

State changes are logged once each at warning: "decoder away, queuing", "queue
full, dropping oldest", "decoder back, N queued frames sent".

The socket is injected (any object with zmq's ``send``/``poll``); nothing here
creates or closes one.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import zmq

from meterpipe.common.schema import Frame, encode_frame

log = logging.getLogger(__name__)


class PushSocket(Protocol):
    """The part of a ``zmq.Socket`` the outbox uses."""

    def send(self, data: Any, flags: int = 0) -> Any: ...

    def poll(self, timeout: int | None = None, flags: int = zmq.POLLIN) -> int: ...


class Outbox:
    """Sends frames in order without blocking; queues and drops the oldest when it must."""

    def __init__(self, socket: PushSocket, capacity: int, meter: str) -> None:
        if capacity < 1:
            raise ValueError("the outbox needs room for at least one frame")
        self._socket = socket
        self._capacity = capacity
        self._meter = meter
        self._queue: deque[Frame] = deque()
        self._away = False  # frames are waiting because the socket would block
        self._dropping = False  # the queue overflowed during this outage
        self._sent_while_away = 0
        self.dropped = 0  # frames dropped since start
        self.sent = 0

    @property
    def pending(self) -> int:
        return len(self._queue)

    def put(self, frame: Frame) -> None:
        """Send ``frame`` now if the socket takes it, else queue it (dropping the oldest when full)."""
        self._queue.append(frame)
        self.flush()
        while len(self._queue) > self._capacity:
            self._queue.popleft()
            self.dropped += 1
            if not self._dropping:
                self._dropping = True
                log.warning(
                    "meter %s: queue full, dropping oldest (%d frames queued)", self._meter, self._capacity
                )

    def flush(self, timeout_ms: int = 0) -> int:
        """Send queued frames in order until the socket would block; wait up to ``timeout_ms`` for it
        to become writable first. Returns the number of frames sent."""
        sent = 0
        while self._queue:
            if timeout_ms > 0 and not self._socket.poll(timeout_ms, zmq.POLLOUT):
                break
            timeout_ms = 0
            frame = self._queue[0]
            try:
                self._socket.send(encode_frame(dataclasses.replace(frame, dropped=self.dropped)), zmq.NOBLOCK)
            except zmq.Again:
                break
            self._queue.popleft()
            sent += 1
        self.sent += sent
        if self._queue:
            if self._away:
                self._sent_while_away += sent
            else:
                self._away = True
                self._sent_while_away = 0
                log.warning("meter %s: decoder away, queuing (up to %d frames)", self._meter, self._capacity)
        elif self._away:
            self._sent_while_away += sent
            log.warning(
                "meter %s: decoder back, %d queued frames sent (%d dropped so far)",
                self._meter,
                self._sent_while_away,
                self.dropped,
            )
            self._away = self._dropping = False
        return sent

    def drain(self, seconds: float, monotonic: Callable[[], float] = time.monotonic) -> int:
        """Try to send what is queued for up to ``seconds`` (at stop). Returns frames left unsent."""
        deadline = monotonic() + seconds
        while self._queue:
            left_ms = int((deadline - monotonic()) * 1000)
            if left_ms <= 0:
                break
            self.flush(min(left_ms, 100))
        if self._queue:
            log.warning("meter %s: stopping with %d queued frames unsent", self._meter, len(self._queue))
        return len(self._queue)
