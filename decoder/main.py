"""``meterpipe-decoder``: the one decoder process of a meterpipe installation.

PULLs frames from every reader on ``endpoints.frames`` (binds), decodes them per
meter, PUBlishes ``[b"reading/<meter>", msgpack]`` and ``[b"status/<meter>",
msgpack]`` on ``endpoints.readings`` (binds). PUB drops messages for
subscribers that are slow or not yet connected (ZeroMQ semantics): publishers
must keep up. Foreground, logs to stdout; SIGTERM stops it within a second.
SIGHUP re-reads the meters from the same config file (the settings page added a
meter or changed a key: deploy/apply.py) without dropping the sockets or the other
meters' state; a config that no longer loads logs one error line and changes
nothing. Endpoints are bound once: a change of them needs a restart.
Exit codes: 0 clean stop, 2 configuration error, 3 cannot bind a socket.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import zmq

from meterpipe.common.config import Config, MeterConfig, load_config
from meterpipe.common.curve_keys import server_enabled
from meterpipe.common.endpoints import ensure_ipc_dir, replay_endpoint
from meterpipe.common.errors import ConfigError
from meterpipe.common.logs import setup_logging
from meterpipe.common.process import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    StopFlag,
    base_parser,
    config_error_exit,
    error_line,
    load_config_or_exit,
    signal_wakeup,
)
from meterpipe.decoder.service import DecoderService

log = logging.getLogger(__name__)

PUB_HWM = 100_000
PULL_HWM = 100_000
LINGER_MS = 500
SUBSCRIBER_GRACE_S = 1.0


class Hangup:
    """Set by SIGHUP (after :meth:`install`); :meth:`reload` re-reads the meters once per signal."""

    def __init__(self, config: Config | None = None) -> None:
        self.requested = False
        self.config = config

    def set(self, signum: int = 0, frame: FrameType | None = None) -> None:
        self.requested = True

    def install(self) -> Hangup:
        signal.signal(signal.SIGHUP, self.set)
        return self

    def reload(self) -> tuple[MeterConfig, ...] | None:
        """The meters of the config file as it is now, after a SIGHUP; None without one, or when
        the file no longer loads (one error line; the meters decoded so far stay)."""
        if not self.requested or self.config is None:
            return None
        self.requested = False
        source: Path | None = self.config.source
        try:
            config = load_config(source)
        except ConfigError as exc:
            log.error("SIGHUP: keeping the meters decoded so far: %s", error_line(exc))
            return None
        if config.endpoints != self.config.endpoints:
            log.warning("SIGHUP: the endpoints changed too; restart the decoder to bind them")
        self.config = config
        return config.meters


def main(argv: Sequence[str] | None = None) -> int:
    args = base_parser("meterpipe-decoder", "Decode every meter's frames into readings.").parse_args(argv)
    hangup = Hangup().install()  # first: a SIGHUP while starting must not end the process
    setup_logging(args.verbose, name="decoder")
    config = load_config_or_exit(args.config)
    hangup.config = config
    stop = StopFlag().install()
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
        if server_enabled(config.endpoints):
            # The authenticator thread (zmq.auth.thread) imports asyncio: only with CurveZMQ.
            from meterpipe.common.curve import secure_frames_server

            auth = secure_frames_server(ctx, pull, config.endpoints)
        for sock, endpoint in bindings:
            ensure_ipc_dir(endpoint)
            sock.bind(endpoint)
    except (zmq.ZMQError, OSError, ConfigError) as exc:
        code = EXIT_UNAVAILABLE
        if isinstance(exc, ConfigError):
            code = config_error_exit(exc)
        else:
            log.error("cannot bind %s: %s (is another decoder running?)", endpoint, exc)
        for sock, _ in bindings:
            sock.close(0)
        if auth is not None:
            auth.stop()
        ctx.term()
        return code
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
        with signal_wakeup() as wakeup:
            service.run(stop, reload=hangup.reload, wakeup=wakeup)
    finally:
        for sock, _ in bindings:
            sock.close()
        if auth is not None:
            auth.stop()
        ctx.term()
    log.info("decoder stopped")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
