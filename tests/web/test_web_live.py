"""Live values end to end: a real zmq PUB socket feeding encoded pushes to the web process
under a real uvicorn, read back from /events and /api/now; the SSE fan-out drops for a slow
client only."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import queue
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import zmq

from meterpipe.common.schema import ReadingsMessage, encode_readings, reading_topic, readings_json
from meterpipe.web import cli
from meterpipe.web.live import CLIENT_QUEUE, MAX_CLIENTS, LiveHub
from tests.support import free_port
from tests.web.conftest import History, Registers, config_for, make_push, readings_pub, web_process, write_config


@pytest.fixture
def pub() -> Iterator[tuple[zmq.Socket[bytes], str, Path]]:
    with readings_pub("mpw-") as published:
        yield published


class Events:
    """An /events stream read on a thread of its own: (event, data) pairs in a queue."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.queue: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.headers: dict[str, str] = {}
        self.status = 0
        self._ready = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(5, read=None), headers=headers)
        self._thread = threading.Thread(target=self._read, args=(url,), daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "no answer from /events"

    def _read(self, url: str) -> None:
        try:
            with self._client.stream("GET", url) as stream:
                self.headers = dict(stream.headers)
                self.status = stream.status_code
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
        # the slow one lost its oldest: it still ends on the newest push, then the end of the stream
        kept = [slow.queue.get_nowait() for _ in range(CLIENT_QUEUE)]
        assert kept[-1] is None and all(item is not None for item in kept[:-1])
        assert f'"seq":{CLIENT_QUEUE * 2 + 1},' in str(kept[0]) and f'"seq":{CLIENT_QUEUE * 3 - 1},' in str(kept[-2])
        hub.on_readings(make_push("house", CLIENT_QUEUE * 3, 1e9, Registers(), 100))
        assert slow.queue.empty()  # nothing after the end
    asyncio.run(run())


def test_stalled_reader_over_tcp_does_not_stop_a_live_one(pub, history: History) -> None:
    sock, endpoint, rundir = pub
    port = free_port()
    config = write_config(rundir, history.path, listen=f"127.0.0.1:{port}", readings=endpoint)
    with web_process(config, port), socket.socket() as stalled:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", port))
        stalled.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # and never read
        events = Events(f"http://127.0.0.1:{port}/events")
        try:
            publish_until_seen(sock, events, make_push("house", 1, time.time(), Registers(), 1))
            for seq in range(2, 1001):
                sock.send_multipart([reading_topic("house"), encode_readings(
                    make_push("house", seq, time.time(), Registers(), seq))])
                if seq % 50 == 0:
                    time.sleep(0.01)
            # the live client may lose some on the way (its queue holds 64), never the newest
            last = 0
            deadline = time.monotonic() + 20
            while last < 1000 and time.monotonic() < deadline:
                _, data = events.next(10)
                last = int(data["seq"])
            assert last == 1000
            status = httpx.get(f"http://127.0.0.1:{port}/api/status").json()
            assert status["web"]["sse_clients"] == 2
        finally:
            events.close()


# --- review fixes: streams end with their session, never leak a slot, the SUB task restarts -----------------


def signed_in_events(base: str, password: str) -> tuple[Events, str]:
    cookie = httpx.post(base + "/api/login", json={"password": password}).cookies["meterpipe_session"]
    events = Events(base + "/events", headers={"Cookie": f"meterpipe_session={cookie}"})
    assert events.status == 200
    return events, cookie


def ends_without_more_readings(sock: zmq.Socket[bytes], events: Events, seq: int) -> None:
    deadline = time.monotonic() + 10
    while events.alive() and time.monotonic() < deadline:
        sock.send_multipart([reading_topic("house"), encode_readings(make_push("house", seq, time.time(),
                                                                               Registers(), 99))])
        time.sleep(0.1)
    assert not events.alive(), "the stream went on after its session ended"
    while not events.queue.empty():
        assert events.queue.get()[1]["seq"] != seq


@pytest.mark.parametrize("how", ["sign-out", "new password"])
def test_a_stream_ends_with_its_session(pub, history: History, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    sock, endpoint, rundir = pub
    port = free_port()
    config = write_config(rundir, history.path, listen=f"0.0.0.0:{port}", readings=endpoint)
    monkeypatch.setattr(sys, "stdin", io.StringIO("a good long password\n"))
    assert cli.main(["set-password", "--config", str(config)]) == 0
    with web_process(config, port):
        base = f"http://127.0.0.1:{port}"
        events, cookie = signed_in_events(base, "a good long password")
        publish_until_seen(sock, events, make_push("house", 1, time.time(), Registers(), 1234))
        if how == "sign-out":
            session = {"Cookie": f"meterpipe_session={cookie}"}
            assert httpx.post(base + "/logout", headers=session).status_code == 403  # no CSRF token
            csrf = httpx.get(base + "/api/csrf", headers=session).json()["csrf"]
            r = httpx.post(base + "/logout", headers=session, data={"csrf": csrf})
            assert r.status_code in (200, 303)
        else:
            monkeypatch.setattr(sys, "stdin", io.StringIO("another good password\n"))
            assert cli.main(["set-password", "--config", str(config)]) == 0
        ends_without_more_readings(sock, events, 2)
        assert httpx.get(base + "/api/status", headers={"Cookie": f"meterpipe_session={cookie}"}).status_code == 401
    events.close()


def test_clients_that_hang_up_at_once_never_hold_a_slot(pub, history: History) -> None:
    _sock, endpoint, rundir = pub
    port = free_port()
    config = write_config(rundir, history.path, listen=f"127.0.0.1:{port}", readings=endpoint)
    with web_process(config, port):
        for _ in range(MAX_CLIENTS + 8):
            s = socket.create_connection(("127.0.0.1", port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, at once
            s.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            s.close()
        deadline = time.monotonic() + 10
        clients = -1
        while time.monotonic() < deadline:
            clients = httpx.get(f"http://127.0.0.1:{port}/api/status").json()["web"]["sse_clients"]
            if clients == 0:
                break
            time.sleep(0.2)
        assert clients == 0
        events = Events(f"http://127.0.0.1:{port}/events")
        assert events.status == 200
    events.close()


def test_a_hang_up_before_the_stream_starts_frees_its_slot(tmp_path: Path, history: History) -> None:
    """The race uvicorn loses now and then: the client is gone before the response starts, so
    ``send`` raises (uvicorn's ClientDisconnected is an OSError) and the body never runs."""
    from meterpipe.web.app import build_app
    from meterpipe.web.main import make_site

    site = make_site(config_for(tmp_path, history))
    app = build_app(site, start_live=False)
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": "/events", "raw_path": b"/events", "query_string": b"",
             "root_path": "", "headers": [(b"host", b"127.0.0.1:8080")], "client": ("127.0.0.1", 5000),
             "server": ("127.0.0.1", 8080), "app": app}

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        raise OSError("client gone")

    async def run() -> None:
        for _ in range(MAX_CLIENTS + 1):
            with contextlib.suppress(Exception):
                await app(scope, receive, send)
        assert site.hub.clients == 0

    asyncio.run(run())


def test_the_sub_task_restarts_after_an_error(pub, caplog: pytest.LogCaptureFixture) -> None:
    sock, endpoint, _rundir = pub

    async def run() -> None:
        hub = LiveHub(endpoint)
        real_feed = hub.feed
        failures = []

        def feed(topic: bytes, payload: bytes) -> None:
            if not failures:
                failures.append(topic)
                raise RuntimeError("a bug in the hub")
            real_feed(topic, payload)

        hub.feed = feed  # type: ignore[method-assign]
        hub.start()
        try:
            deadline = time.monotonic() + 10
            seq = 0
            while hub.received == 0 and time.monotonic() < deadline:
                seq += 1
                sock.send_multipart([reading_topic("house"), encode_readings(make_push("house", seq, time.time(),
                                                                                       Registers(), 5))])
                await asyncio.sleep(0.1)
            assert failures and hub.received > 0
        finally:
            await hub.stop()

    with caplog.at_level(logging.ERROR, logger="meterpipe.web.live"):
        asyncio.run(run())
    assert any("a bug in the hub" in (r.exc_text or "") or r.exc_info for r in caplog.records)
    assert any("opening the socket again" in r.getMessage() for r in caplog.records)
