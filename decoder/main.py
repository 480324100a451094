"""``meterpipe-decoder``: the one decoder process of a meterpipe installation.

PULLs frames from every reader on ``endpoints.frames`` (binds), decodes them per
meter, PUBlishes ``[b"reading/<meter>", msgpack]`` and ``[b"status/<meter>",
msgpack]`` on ``endpoints.readings`` (binds). PUB drops messages for
subscribers that are slow or not yet connected (ZeroMQ semantics): publishers
must keep up. Foreground, logs to stdout; SIGTERM stops it within a second.
Exit codes: 0 clean stop, 2 configuration error, 3 cannot bind a socket.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType

import zmq

from meterpipe.common.curve import secure_frames_server
from meterpipe.common.endpoints import ensure_ipc_dir, replay_endpoint
from meterpipe.common.logs import setup_logging
from meterpipe.common.errors import ConfigError
from meterpipe.common.startup import add_config_argument, error_line, load_or_exit
from meterpipe.decoder.service import DecoderService

log = logging.getLogger(__name__)

PUB_HWM = 100_000
PULL_HWM = 100_000
LINGER_MS = 500
SUBSCRIBER_GRACE_S = 1.0


class _Stop:
    def __init__(self) -> None:
        self.requested = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def __call__(self) -> bool:
        return self.requested


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="meterpipe-decoder", description="Decode every meter's frames into readings.")
    add_config_argument(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    args = parser.parse_args(argv)
    setup_logging(args.verbose, name="decoder")
    config = load_or_exit(args.config)
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop.handle)
    signal.signal(signal.SIGINT, stop.handle)
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pub = ctx.socket(zmq.PUB)
    rep = ctx.socket(zmq.REP)
    for sock, hwm in ((pull, PULL_HWM), (pub, PUB_HWM)):
        sock.setsockopt(zmq.LINGER, LINGER_MS)
        sock.setsockopt(zmq.RCVHWM if sock is pull else zmq.SNDHWM, hwm)
    rep.setsockopt(zmq.LINGER, 0)
    bindings = (
        (pull, config.endpoints.frames),
        (pub, config.endpoints.readings),
        (rep, replay_endpoint(config.endpoints.readings)),
    )
    auth = None
    endpoint = config.endpoints.frames
    try:
        auth = secure_frames_server(ctx, pull, config.endpoints)  # CurveZMQ when configured
        for sock, endpoint in bindings:
            ensure_ipc_dir(endpoint)
            sock.bind(endpoint)
    except (zmq.ZMQError, OSError, ConfigError) as exc:
        if isinstance(exc, ConfigError):
            print(error_line(exc), file=sys.stderr, flush=True)
        else:
            log.error("cannot bind %s: %s (is another decoder running?)", endpoint, exc)
        for sock, _ in bindings:
            sock.close(0)
        if auth is not None:
            auth.stop()
        ctx.term()
        return 2 if isinstance(exc, ConfigError) else 3
    names = ", ".join(m.name for m in config.meters)
    log.info("decoder up: frames on %s, readings on %s, meters: %s", config.endpoints.frames, config.endpoints.readings, names)
    # Subscribers (re)connect within ZeroMQ's 100 ms reconnect interval; readers'
    # frames wait in their queues meanwhile. Without this pause, the readings of
    # frames queued while the decoder was down would go out before the
    # publishers are back, and PUB drops for absent subscribers.
    deadline = time.monotonic() + SUBSCRIBER_GRACE_S
    while not stop() and time.monotonic() < deadline:
        time.sleep(0.05)
    service = DecoderService(config.meters, pull, pub, replay=rep)
    try:
        service.run(stop)
    finally:
        for sock, _ in bindings:
            sock.close()
        if auth is not None:
            auth.stop()
        ctx.term()
    log.info("decoder stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
