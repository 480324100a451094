"""The shared SUB loop of every publisher process.

Each publisher (CSV, journal, MQTT) is its own process: it CONNECTs a SUB socket
to the decoder's readings endpoint, subscribes to ``reading/`` and ``status/``,
decodes every message with :mod:`meterpipe.common.schema` and hands it to a
:class:`Handler`.

ZeroMQ PUB/SUB semantics matter here: the decoder's PUB socket *drops* messages
for a subscriber that is not connected yet (late joiner) or whose queue is full
(slow subscriber). Nothing is retried. A publisher must therefore keep up: do
the slow work (a broker outage, a full disk) off the receive path, e.g. into the
MQTT spool, and keep receiving. RCVHWM is set high (100 000 messages) so a short
stall is absorbed by the queue; the per-meter ``seq`` lets us see and count what
was lost anyway.

The loop polls with a timeout (``POLL_MS``, or longer when the handler's
``idle_ms`` allows: a signal wakes the poll at once through
:func:`~meterpipe.common.process.signal_wakeup`, so a SIGTERM handler that only
sets a flag is seen promptly) and calls ``handler.tick(now)`` after every poll
for periodic work (flush, retention, MQTT network I/O and reconnect).

A new publisher is a :class:`Handler` subclass that overrides what it needs, a
``main()`` that calls :func:`run_publisher`, one row in
:data:`meterpipe.deploy.programs.PROGRAMS` and its ``[publishers.<name>]``
section in :mod:`meterpipe.common.publisher_config`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import zmq

from meterpipe.common.config import Config
from meterpipe.common.endpoints import replay_endpoint
from meterpipe.common.errors import ConfigError, SchemaError
from meterpipe.common.logs import setup_logging
from meterpipe.common.process import (
    POLL_MS,
    StopFlag,
    base_parser,
    config_error_exit,
    drain,
    freeze_startup_heap,
    load_config_or_exit,
    signal_wakeup,
)
from meterpipe.common.schema import (
    READING_TOPIC,
    STATUS_TOPIC,
    ReadingsMessage,
    Status,
    decode_readings,
    decode_replay_reply,
    decode_status,
    encode_replay_request,
    meter_of_topic,
)

log = logging.getLogger(__name__)

RCVHWM = 100_000


class Handler:
    """What a publisher implements; every method is called from the loop thread.

    Each default does nothing, so a publisher overrides only what it uses.
    """

    def on_readings(self, msg: ReadingsMessage) -> None:
        """One decoded push (live, or replayed by the decoder at start)."""

    def on_status(self, status: Status) -> None:
        """A meter's counters and last error (every 10 s, and when the error changes)."""

    def tick(self, now: float) -> None:
        """Periodic work; called after every poll (so at least every ``POLL_MS``)."""

    def poll_fds(self) -> Sequence[int]:
        """Extra file descriptors whose readability should wake the loop."""
        return ()

    def idle_ms(self) -> int:
        """How long the loop may wait when nothing arrives before it calls :meth:`tick`.
        A stop signal wakes it at once in a process's main thread, whatever this says."""
        return POLL_MS

    def replay_cursor(self) -> Mapping[str, int]:
        """Per meter, the receive time (ns) of the last push already stored; pushes after
        it that the decoder still holds are replayed at start (empty: no replay)."""
        return {}


@dataclass(slots=True)
class SubscriberStats:
    received: int = 0
    schema_errors: int = 0
    gaps: int = 0  # number of jumps in seq
    missing: int = 0  # pushes lost in those jumps
    restarts: int = 0  # decoder restarts seen (seq back to 1)


@dataclass(slots=True)
class SeqTracker:
    """Per-meter gap detection on ReadingsMessage.seq (the decoder's push counter)."""

    stats: SubscriberStats
    last: dict[str, int] = field(default_factory=dict)

    def observe(self, meter: str, seq: int) -> int:
        """Record ``seq`` of ``meter``; return the number of pushes missed before it."""
        prev = self.last.get(meter)
        self.last[meter] = seq
        if prev is None:
            return 0
        if seq == 1 and prev != 0:
            self.stats.restarts += 1
            log.info("meter %s: decoder restarted (seq back to 1 after %s)", meter, prev)
            return 0
        missing = seq - prev - 1
        if missing > 0:
            self.stats.gaps += 1
            self.stats.missing += missing
            log.warning(
                "meter %s: %s push(es) lost between seq %s and %s (subscriber too slow or "
                "reconnected); %s lost so far", meter, missing, prev, seq, self.stats.missing,
            )
            return missing
        if missing < 0:
            log.info("meter %s: seq went back from %s to %s", meter, prev, seq)
        return 0


def dispatch(
    topic: bytes, payload: bytes, handler: Handler, tracker: SeqTracker, replayed: Replayed | None = None
) -> None:
    """Decode one multipart message and hand it over; schema errors are counted and logged."""
    stats = tracker.stats
    try:
        if topic.startswith(READING_TOPIC):
            msg = decode_readings(payload)
            topic_meter = meter_of_topic(topic)
            if topic_meter not in (msg.meter, "replay"):
                raise SchemaError(f"topic meter {topic_meter!r} differs from message meter {msg.meter!r}")
            if replayed is not None and replayed.seen(msg.meter, msg.received_ns):
                return  # live copy of a push the replay already delivered
            stats.received += 1
            tracker.observe(msg.meter, msg.seq)
            handler.on_readings(msg)
        elif topic.startswith(STATUS_TOPIC):
            handler.on_status(decode_status(payload))
        else:
            raise SchemaError(f"unexpected topic {topic[:80]!r}")
    except SchemaError as exc:
        stats.schema_errors += 1
        log.warning("dropped a message that does not match the wire schema (%s so far): %s",
                    stats.schema_errors, exc)


REPLAY_TIMEOUT_MS = 2000


@dataclass(slots=True)
class Replayed:
    """What the decoder replayed at start, so that live copies of it are skipped once."""

    payloads: list[bytes] = field(default_factory=list)
    upto: dict[str, int] = field(default_factory=dict)  # meter -> receive time of the last replayed push

    def seen(self, meter: str, received_ns: int) -> bool:
        last = self.upto.get(meter)
        if last is None:
            return False
        if received_ns <= last:
            return True
        del self.upto[meter]  # past the replay: from here on every message is new
        return False


def fetch_replay(context: zmq.Context[zmq.Socket[bytes]], endpoint: str, cursor: Mapping[str, int]) -> Replayed:
    """Ask the decoder for the pushes after ``cursor``; an absent decoder means nothing to replay."""
    replayed = Replayed()
    if not cursor:
        return replayed
    req: zmq.Socket[bytes] = context.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.setsockopt(zmq.RCVTIMEO, REPLAY_TIMEOUT_MS)
    try:
        req.connect(replay_endpoint(endpoint))
        req.send(encode_replay_request(cursor))
        replayed.payloads = decode_replay_reply(req.recv())
    except zmq.Again:
        log.info("the decoder did not answer the replay request (not running?): starting with live pushes")
        return replayed
    except (zmq.ZMQError, SchemaError, ConfigError) as exc:
        log.warning("replay request failed (%s): starting with live pushes", exc)
        return replayed
    finally:
        req.close(linger=0)
    for payload in replayed.payloads:
        try:
            msg = decode_readings(payload)
        except SchemaError:
            continue
        replayed.upto[msg.meter] = max(msg.received_ns, replayed.upto.get(msg.meter, 0))
    return replayed


def run_subscriber(
    endpoint: str,
    handler: Handler,
    stop: Callable[[], bool],
    *,
    ctx: zmq.Context[zmq.Socket[bytes]] | None = None,
    poll_ms: int = POLL_MS,
) -> SubscriberStats:
    """Receive from ``endpoint`` until ``stop()`` is true; return the counters."""
    context = ctx if ctx is not None else zmq.Context.instance()
    sock: zmq.Socket[bytes] = context.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, RCVHWM)
    sock.setsockopt(zmq.SUBSCRIBE, READING_TOPIC)
    sock.setsockopt(zmq.SUBSCRIBE, STATUS_TOPIC)
    stats = SubscriberStats()
    tracker = SeqTracker(stats)
    stack = contextlib.ExitStack()
    try:
        sock.connect(endpoint)
        log.info("subscribed to %s", endpoint)
        replayed = fetch_replay(context, endpoint, handler.replay_cursor())
        for payload in replayed.payloads:
            dispatch(READING_TOPIC + b"replay", payload, handler, tracker)
        if replayed.payloads:
            log.info("caught up: %d push(es) replayed by the decoder", len(replayed.payloads))
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        wakeup = stack.enter_context(signal_wakeup())
        if wakeup is not None:
            poller.register(wakeup, zmq.POLLIN)
        watched: tuple[int, ...] = ()
        while not stop():
            fds = tuple(handler.poll_fds())
            if fds != watched:  # the MQTT socket changes on reconnect: re-register only then
                for fd in watched:
                    poller.unregister(fd)
                for fd in fds:
                    poller.register(fd, zmq.POLLIN)
                watched = fds
            events = dict(poller.poll(poll_ms if wakeup is None else max(poll_ms, handler.idle_ms())))
            if wakeup is not None and wakeup in events:
                drain(wakeup)
            if sock in events:
                # drain what is queued, but give tick() a turn now and then
                for _ in range(1000):
                    try:
                        parts = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if len(parts) != 2:
                        stats.schema_errors += 1
                        log.warning("dropped a message of %s parts (expected [topic, payload])", len(parts))
                        continue
                    dispatch(parts[0], parts[1], handler, tracker, replayed)
            handler.tick(time.time())
    finally:
        stack.close()
        sock.close(linger=0)
    return stats


# --- process scaffolding shared by the publisher main()s ------------------------


def run_publisher(
    prog: str,
    description: str,
    argv: Sequence[str] | None,
    section: str,
    build: Callable[[Config], tuple[Handler, Callable[[], None]]],
) -> int:
    """The common main(): args, logging, config, enabled check, SUB loop until SIGTERM.

    ``build(config)`` returns the handler and a close function. Exit codes: 0 on
    SIGTERM/SIGINT and when the publisher is disabled in the config (supervisord
    needs ``startsecs=0`` and ``exitcodes=0`` so that a disabled publisher's quick
    exit is not an error), 2 on a config error (from load_config_or_exit).
    """
    args = base_parser(prog, description).parse_args(argv)
    setup_logging(args.verbose, name=prog.removeprefix("meterpipe-"))
    config = load_config_or_exit(args.config)
    return serve(config, prog, section, build, StopFlag().install())


def serve(
    config: Config,
    prog: str,
    section: str,
    build: Callable[[Config], tuple[Handler, Callable[[], None]]],
    stop: Callable[[], bool],
) -> int:
    """Run one publisher on an already loaded config until ``stop()``; the exit code."""
    if not getattr(config.publishers, section).enabled:
        log.info("%s: publisher disabled in config (publishers.%s.enabled = false)", prog, section)
        return 0
    try:
        handler, close = build(config)
    except ConfigError as exc:  # a setting only the publisher itself can check (a spool path, ...)
        return config_error_exit(exc)
    try:
        freeze_startup_heap()
        stats = run_subscriber(config.endpoints.readings, handler, stop)
    finally:
        close()
    log.info("%s: stopping; %s push(es) received, %s lost (seq gaps), %s schema error(s)",
             prog, stats.received, stats.missing, stats.schema_errors)
    return 0
