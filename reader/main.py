"""``meterpipe-reader --meter NAME``: one meter's serial port to the decoder's frames socket.

Runs in the foreground, logs to stdout. SIGTERM/SIGINT stop it: queued frames get up to
1 s to go, the socket closes with a bounded linger, and it exits 0 within 2 s.
Exit codes: 0 clean stop, 2 configuration error (including an unknown meter name).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import zmq

from meterpipe.common.config import MeterConfig
from meterpipe.common.errors import ConfigError
from meterpipe.common.logs import setup_logging
from meterpipe.common.process import EXIT_OK, StopFlag, base_parser, config_error_exit, load_config_or_exit
from meterpipe.reader.port import SerialLike, open_serial
from meterpipe.reader.service import ReaderService, connect_frames_socket

log = logging.getLogger(__name__)

CLOSE_BUDGET = 1.5  # seconds from the stop request to the socket being closed


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser("meterpipe-reader", "Read one meter's serial port and push its link-layer frames to the decoder.")
    parser.add_argument("--meter", required=True, help="name of the meter in the config ([[meters]] name)")
    args = parser.parse_args(argv)
    setup_logging(args.verbose, name=f"reader {args.meter}")
    config = load_config_or_exit(args.config)
    try:
        meter = config.meter(args.meter)
    except ConfigError as exc:  # same one line, same place as any other config error
        return config_error_exit(exc)
    stop = StopFlag().install()

    def open_port(m: MeterConfig = meter) -> SerialLike:
        return open_serial(m)

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        sock = connect_frames_socket(ctx, config.endpoints)  # CurveZMQ client when configured
    except ConfigError as exc:  # a key file gone since the config was loaded
        ctx.term()
        return config_error_exit(exc)
    try:
        ReaderService(meter, sock, open_port).run(stop)
    except ConfigError as exc:  # pyserial refused the port settings themselves
        return config_error_exit(exc)
    finally:
        # Frames the socket still holds get what is left of the stop budget, never more.
        sock.close(linger=max(0, int(stop.left(CLOSE_BUDGET) * 1000)))
        ctx.term()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
