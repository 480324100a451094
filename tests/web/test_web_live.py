"""Live values end to end: a real zmq PUB socket feeding encoded pushes to the web process
under a real uvicorn, read back from /events and /api/now; the SSE fan-out drops for a slow
client only."""

from __future__ import annotations

import asyncio
import json
import queue
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import zmq

from meterpipe.common.schema import ReadingsMessage, encode_readings, reading_topic, readings_json
from meterpipe.web.live import CLIENT_QUEUE, LiveHub
from tests.support import cleanup, free_port, short_dir
from tests.web.conftest import History, Registers, make_push, web_process, write_config


@pytest.fixture
def pub() -> Iterator[tuple[zmq.Socket[bytes], str, Path]]:
    rundir = short_dir("mpw-")
    ctx = zmq.Context()
    sock: zmq.Socket[bytes] = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    endpoint = f"ipc://{rundir}/readings"
    sock.bind(endpoint)
    try:
        yield sock, endpoint, rundir
    finally:
        sock.close(linger=0)
        ctx.term()
        cleanup(rundir)


class Events:
    """An /events stream read on a thread of its own: (event, data) pairs in a queue."""

    def __init__(self, url: str) -> None:
        self.queue: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.headers: dict[str, str] = {}
        self._ready = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(5, read=None))
        self._thread = threading.Thread(target=self._read, args=(url,), daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "no answer from /events"

    def _read(self, url: str) -> None:
        try:
            with self._client.stream("GET", url) as stream:
                self.headers = dict(stream.headers)
                self._ready.set()
                event = ""
                for line in stream.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event:
                        self.queue.put((event, json.loads(line[6:])))
        except (httpx.HTTPError, RuntimeError):
            pass  # closed by close()
        finally:
            self._ready.set()

    def next(self, timeout: float) -> tuple[str, dict[str, Any]]:
        return self.queue.get(timeout=timeout)

    def close(self) -> None:
        self._thread.join(5)
        self._client.close()

    def alive(self) -> bool:
        return self._thread.is_alive()


def publish_until_seen(sock: zmq.Socket[bytes], events: Events, msg: ReadingsMessage) -> dict[str, Any]:
    """PUB drops until the web process's SUB has joined: send again until the event comes."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        sock.send_multipart([reading_topic(msg.meter), encode_readings(msg)])
        try:
            event, data = events.next(0.2)
        except queue.Empty:
            continue
        if event == "reading" and data["seq"] == msg.seq:
            return data
    raise AssertionError("the push never came back from /events")


def test_sse_and_now_follow_the_socket(pub, history: History) -> None:
    sock, endpoint, rundir = pub
    port = free_port()
    config = write_config(rundir, history.path, listen=f"127.0.0.1:{port}", readings=endpoint)
    with web_process(config, port):
        base = f"http://127.0.0.1:{port}"
        events = Events(base + "/events")
        # the stream stays open until the server stops: that must end it
        assert events.headers["content-type"].startswith("text/event-stream")
        msg = make_push("house", 1, time.time(), Registers(), 1234)
        seen = publish_until_seen(sock, events, msg)
        assert seen == json.loads(json.dumps(readings_json(msg)))
        assert httpx.get(base + "/api/now", params={"meter": "house"}).json() == seen
        second = make_push("house", 2, time.time(), Registers(t1=5_000_010), 4321)
        sock.send_multipart([reading_topic("house"), encode_readings(second)])
        event, data = events.next(5)
        assert event == "reading" and data["seq"] == 2
    events.close()
    assert not events.alive()


def test_a_slow_client_never_blocks_the_others() -> None:
    async def run() -> None:
        hub = LiveHub(None)
        slow = hub.subscribe()
        fast = hub.subscribe()
        assert slow is not None and fast is not None
        got = 0
        for seq in range(1, CLIENT_QUEUE * 3):
            hub.on_readings(make_push("house", seq, 1e9 + seq, Registers(), 100))
            item = fast.queue.get_nowait()
            assert item is not None and f'"seq":{seq},' in item
            got += 1
        assert slow.queue.full() and slow.dropped == CLIENT_QUEUE * 3 - 1 - CLIENT_QUEUE
        assert got == CLIENT_QUEUE * 3 - 1
        assert len(hub.recent["house"]) <= 301  # five minutes of pushes
        hub.close_clients()
        assert fast.queue.get_nowait() is None
    asyncio.run(run())


def test_stalled_reader_over_tcp_does_not_stop_a_live_one(pub, history: History) -> None:
    sock, endpoint, rundir = pub
    port = free_port()
    config = write_config(rundir, history.path, listen=f"127.0.0.1:{port}", readings=endpoint)
    with web_process(config, port):
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", port))
        stalled.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # and never read
        events = Events(f"http://127.0.0.1:{port}/events")
        publish_until_seen(sock, events, make_push("house", 1, time.time(), Registers(), 1))
        for seq in range(2, 1001):
            sock.send_multipart([reading_topic("house"), encode_readings(
                make_push("house", seq, time.time(), Registers(), seq))])
            if seq % 50 == 0:
                time.sleep(0.01)  # the live client's own queue holds 64
        last = 0
        deadline = time.monotonic() + 20
        while last < 1000 and time.monotonic() < deadline:
            _, data = events.next(10)
            last = int(data["seq"])
        assert last == 1000
        status = httpx.get(f"http://127.0.0.1:{port}/api/status").json()
        assert status["web"]["sse_clients"] == 2
    events.close()
    stalled.close()
