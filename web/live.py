"""Live values: one SUB socket on the decoder's readings, fanned out to SSE clients.

:class:`LiveHub` runs as one asyncio task on the server's loop (``zmq.asyncio``: the
socket's descriptor is watched by the loop, so at rest nothing wakes). It keeps per
meter the latest push and the latest status, and the pushes of the last
:data:`RECENT_SECONDS` (the history database commits once a minute, so the Live chart
takes its newest points from here). Every message goes to each SSE client's own
bounded queue; a client whose queue is full loses that message (counted), so one slow
phone never holds up the others or the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio

from meterpipe.common.errors import SchemaError
from meterpipe.common.process import Backoff
from meterpipe.common.schema import (
    READING_TOPIC,
    STATUS_TOPIC,
    ReadingsMessage,
    Status,
    decode_readings,
    decode_status,
    readings_json,
)

log = logging.getLogger(__name__)

RECENT_SECONDS = 300
CLIENT_QUEUE = 64  # messages per SSE client; beyond, its oldest go, so a page always ends on the newest push
MAX_CLIENTS = 32
RCVHWM = 10_000
RECONNECT_MAX_MS = 5_000
RESTART_INITIAL_S = 0.5  # after the SUB loop failed: first delay before it starts again
RESTART_MAX_S = 30.0


def status_json(status: Status) -> dict[str, Any]:
    return {
        "meter": status.meter,
        "sent": status.sent_ns / 1e9,
        "counters": dict(status.counters),
        "last_error": status.last_error,
        "last_error_kind": status.last_error_kind,
        "last_push": None if status.last_push_ns is None else status.last_push_ns / 1e9,
    }


@dataclass(slots=True, eq=False)  # hashed by identity: kept in a set
class Client:
    queue: asyncio.Queue[str | None] = field(default_factory=lambda: asyncio.Queue(CLIENT_QUEUE))
    dropped: int = 0
    ending: bool = False  # its end marker is queued: nothing more is offered


class LiveHub:
    """Latest values per meter and the SSE fan-out; all methods run on the event loop."""

    def __init__(self, endpoint: str | None) -> None:
        self.endpoint = endpoint
        self.latest: dict[str, ReadingsMessage] = {}
        self.status: dict[str, Status] = {}
        self.recent: dict[str, deque[ReadingsMessage]] = {}
        self.received = 0
        self.schema_errors = 0
        self._clients: set[Client] = set()
        self._task: asyncio.Task[None] | None = None
        self._ctx: zmq.asyncio.Context | None = None

    # --- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        if self.endpoint is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(self.endpoint), name="live-sub")

    async def stop(self) -> None:
        self.close_clients()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def close_clients(self) -> None:
        """End every SSE stream (at shutdown: uvicorn waits for open responses)."""
        for client in self._clients:
            _offer(client, None)

    async def _run(self, endpoint: str) -> None:
        """The SUB loop; anything that ends it other than a stop is logged, and the socket is
        opened again after a backoff (a dead task would freeze every page's live values)."""
        backoff = Backoff(initial=RESTART_INITIAL_S, cap=RESTART_MAX_S)
        while True:
            started = time.monotonic()
            try:
                await self._subscribe(endpoint)
            except asyncio.CancelledError:
                raise
            except Exception:
                if time.monotonic() - started > RESTART_MAX_S:
                    backoff.reset()
                delay = backoff.next_delay()
                log.exception("live values from %s stopped; opening the socket again in %.1f s", endpoint, delay)
                await asyncio.sleep(delay)

    async def _subscribe(self, endpoint: str) -> None:
        self._ctx = zmq.asyncio.Context()
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, RCVHWM)
        # Without a decoder zmq retries the connect every 100 ms: back off to RECONNECT_MAX_MS.
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_MAX_MS)
        sock.setsockopt(zmq.SUBSCRIBE, READING_TOPIC)
        sock.setsockopt(zmq.SUBSCRIBE, STATUS_TOPIC)
        try:
            sock.connect(endpoint)
            log.info("live values from %s", endpoint)
            while True:
                parts = await sock.recv_multipart()
                if len(parts) == 2:
                    self.feed(parts[0], parts[1])
                else:
                    self.schema_errors += 1
        finally:
            sock.close(linger=0)
            self._ctx.term()
            self._ctx = None

    # --- messages ------------------------------------------------------------

    def feed(self, topic: bytes, payload: bytes) -> None:
        """One multipart message from the readings socket."""
        try:
            if topic.startswith(READING_TOPIC):
                self.on_readings(decode_readings(payload))
            elif topic.startswith(STATUS_TOPIC):
                self.on_status(decode_status(payload))
        except SchemaError as exc:
            self.schema_errors += 1
            log.warning("dropped a message that does not match the wire schema (%s so far): %s",
                        self.schema_errors, exc)

    def on_readings(self, msg: ReadingsMessage) -> None:
        self.received += 1
        self.latest[msg.meter] = msg
        recent = self.recent.setdefault(msg.meter, deque())
        recent.append(msg)
        horizon = msg.received_ns - RECENT_SECONDS * 1_000_000_000
        while recent and recent[0].received_ns < horizon:
            recent.popleft()
        if self._clients:  # nobody looking: no JSON made (the Pi at rest)
            self._broadcast("reading", readings_json(msg))

    def on_status(self, status: Status) -> None:
        self.status[status.meter] = status
        if self._clients:
            self._broadcast("status", status_json(status))

    def _broadcast(self, event: str, data: dict[str, Any]) -> None:
        text = f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"
        for client in self._clients:
            _offer(client, text)

    # --- SSE clients -----------------------------------------------------------

    def full(self) -> bool:
        return len(self._clients) >= MAX_CLIENTS

    def subscribe(self) -> Client | None:
        """A new SSE client, or None when :data:`MAX_CLIENTS` are connected."""
        if self.full():
            return None
        client = Client()
        self._clients.add(client)
        return client

    def unsubscribe(self, client: Client) -> None:
        self._clients.discard(client)

    @property
    def clients(self) -> int:
        return len(self._clients)

    def age(self, meter: str, now: float | None = None) -> float | None:
        msg = self.latest.get(meter)
        if msg is None:
            return None
        return max(0.0, (time.time() if now is None else now) - msg.received_ns / 1e9)


def _offer(client: Client, item: str | None) -> None:
    """Queue ``item`` (None: the end of the stream) for one client; a client that has fallen
    behind loses its oldest message, never the newest, so its page ends on the latest push."""
    if client.ending:
        return
    if client.queue.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            client.queue.get_nowait()
            client.dropped += 1
    client.queue.put_nowait(item)
    client.ending = item is None
