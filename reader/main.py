"""``meterpipe-reader --meter NAME``: one meter's serial port to the decoder's frames socket.

Runs in the foreground, logs to stdout. SIGTERM/SIGINT stop it: queued frames get up to
1 s to go, the socket closes with a bounded linger, and it exits 0 within 2 s.
Exit codes: 0 clean stop, 2 configuration error (including an unknown meter name).
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

from meterpipe.common.config import MeterConfig
from meterpipe.common.errors import ConfigError
from meterpipe.common.logs import setup_logging
from meterpipe.common.startup import add_config_argument, error_line, load_or_exit
from meterpipe.reader.port import open_serial, SerialLike
from meterpipe.reader.service import connect_frames_socket, ReaderService

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CONFIG = 2
CLOSE_BUDGET = 1.5  # seconds from the stop request to the socket being closed


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="meterpipe-reader",
        description="Read one meter's serial port and push its link-layer frames to the decoder.",
    )
    parser.add_argument("--meter", required=True, help="name of the meter in the config ([[meters]] name)")
    add_config_argument(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    return parser.parse_args(argv)


class _StopFlag:
    """Set by SIGTERM/SIGINT; the loop polls it."""

    def __init__(self) -> None:
        self.requested = False
        self.at = 0.0  # monotonic time of the request

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.requested:
            self.requested = True
            self.at = time.monotonic()

    def __call__(self) -> bool:
        return self.requested


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    setup_logging(args.verbose, name=f"reader {args.meter}")
    try:
        config = load_or_exit(args.config)
    except SystemExit as exc:  # load_or_exit has printed its one line already
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG
    try:
        meter = config.meter(args.meter)
    except ConfigError as exc:  # same one line, same place as any other config error
        print(error_line(exc), file=sys.stderr, flush=True)
        return EXIT_CONFIG

    stop = _StopFlag()
    signal.signal(signal.SIGTERM, stop.handle)
    signal.signal(signal.SIGINT, stop.handle)

    def open_port(m: MeterConfig = meter) -> SerialLike:
        return open_serial(m)

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        sock = connect_frames_socket(ctx, config.endpoints)  # CurveZMQ client when configured
    except ConfigError as exc:  # a key file gone since the config was loaded
        ctx.term()
        print(error_line(exc), file=sys.stderr, flush=True)
        return EXIT_CONFIG
    try:
        ReaderService(meter, sock, open_port).run(stop)
    except ConfigError as exc:  # pyserial refused the port settings themselves
        print(error_line(exc), file=sys.stderr, flush=True)
        return EXIT_CONFIG
    finally:
        # Frames the socket still holds get what is left of the stop budget, never more.
        left = CLOSE_BUDGET - (time.monotonic() - stop.at) if stop.requested else CLOSE_BUDGET
        sock.close(linger=max(0, int(left * 1000)))
        ctx.term()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
