"""``meterpipe simulate``: a simulated smart meter on a pty or a serial port.

The command writes the pushes of a :class:`~meterpipe.simulator.meter.MeterSimulator`
(or a ``--replay`` capture) to a serial port (``--port``, any ``serial_for_url``
URL) or to a pseudo-terminal it opens and names on stdout, so a reader can be
pointed at it as at a real meter::

    $ meterpipe simulate --model e450 --link /tmp/meter0
    simulated e450 on /dev/pts/7

This module only reads the command line; the meter is
:mod:`~meterpipe.simulator.meter`, the ports and the clock
:mod:`~meterpipe.simulator.sinks`.
"""

from __future__ import annotations

import argparse
import binascii
import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Final

from meterpipe.common import config_fields
from meterpipe.common.errors import ConfigError
from meterpipe.common.logs import setup_logging
from meterpipe.common.process import EXIT_CONFIG, EXIT_OK, StopFlag
from meterpipe.simulator.meter import Meter, MeterSimulator, ReplayMeter, SimulatedPush
from meterpipe.simulator.models import MODELS
from meterpipe.simulator.sinks import PtySink, SerialSink, Sink, make_link, transmit
from meterpipe.simulator.state import MeterState, load_state, save_state

log = logging.getLogger(__name__)

MIN_INTERVAL_S: Final = 0.05


def _read_key_file(path: str | None, option: str) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemExit(f"error: {option}: cannot read {path}: {type(exc).__name__}") from exc


def _parse_key(text: str | None, option: str) -> bytes | None:
    if text is None:
        return None
    try:  # the config's parser: its messages never echo the value
        return config_fields.parse_key(text, option, "the value given")
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from exc


def read_capture(path: Path) -> bytes:
    """A replay file: hex text (whitespace, newlines, ``0x`` allowed) or raw binary."""
    raw = path.read_bytes()
    try:
        text = raw.decode("ascii")
        cleaned = "".join(text.split()).replace("0x", "").replace("0X", "")
        if cleaned:
            return binascii.unhexlify(cleaned)
    except (UnicodeDecodeError, binascii.Error, ValueError):
        pass
    return raw


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meterpipe simulate", description="Simulate a smart meter's push interface.")
    p.add_argument("--model", choices=sorted(MODELS), help="meter model to simulate")
    p.add_argument("--port", help="write to this port (serial_for_url URL) instead of a new pty")
    p.add_argument("--link", type=Path, help="symlink to create at this path, pointing to the pty")
    p.add_argument("--interval", type=float, help="seconds between pushes (default: the model's cadence)")
    p.add_argument("--key", help="encryption key, 32 hex digits (prefer --key-file: command lines are public)")
    p.add_argument("--auth-key", help="authentication key, 32 hex digits (prefer --auth-key-file)")
    p.add_argument("--key-file", help="file holding the encryption key as 32 hex digits")
    p.add_argument("--auth-key-file", help="file holding the authentication key as 32 hex digits")
    p.add_argument("--replay", type=Path, help="write this capture (hex or binary) each interval")
    p.add_argument("--count", type=int, help="stop after this many pushes")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated values (default 0)")
    p.add_argument("--serial", help="meter id the meter sends (default: derived from the seed)")
    p.add_argument("--record", type=Path, help="append one JSON line per push to this file")
    p.add_argument("--state", type=Path, help="start from the registers in this file and keep them there "
                   "(a restarted simulator carries on; written every few seconds)")
    p.add_argument("--baudrate", type=int, default=115200, help="line speed (default 115200)")
    p.add_argument("--pace", action="store_true", help="write frames at the pace of --baudrate")
    p.add_argument("-v", "--verbose", action="store_true", help="log every push")
    return p


def _run(args: argparse.Namespace, sink: Sink, stop: StopFlag, record: IO[str] | None) -> None:
    meter: Meter
    simulator: MeterSimulator | None = None
    if args.replay is not None:
        meter = ReplayMeter(read_capture(args.replay))
    else:
        state = _state(args.state) if args.state is not None else None
        meter = simulator = MeterSimulator(
            args.model,
            key=_parse_key(args.key, "--key"),
            auth_key=_parse_key(args.auth_key, "--auth-key"),
            seed=args.seed,
            serial=args.serial,
            start_registers=state.registers if state is not None else None,
        )
        if args.state is not None:
            meter = _Keeping(simulator, args.state)
    try:
        _transmit(args, meter, sink, stop, record)
    finally:
        if isinstance(meter, _Keeping):
            meter.save()


def _state(path: Path) -> MeterState | None:
    """The registers to start from; an unreadable file (a power cut) is reported and ignored."""
    try:
        return load_state(path)
    except ValueError as exc:
        log.warning("--state: %s; starting from the simulator's own registers", exc)
        return None


class _Keeping:
    """A simulator whose registers are saved to its state file every few seconds."""

    EVERY_S = 5.0

    def __init__(self, simulator: MeterSimulator, path: Path) -> None:
        self.simulator = simulator
        self.path = path
        self._time = 0.0
        self._saved = 0.0

    def push(self, now: datetime) -> SimulatedPush:
        push = self.simulator.push(now)
        self._time = push.time.timestamp()
        if self._time - self._saved >= self.EVERY_S:
            self.save()
        return push

    def save(self) -> None:
        if self._time:
            save_state(self.path, MeterState(self.simulator.registers(), self._time))
            self._saved = self._time


def _transmit(args: argparse.Namespace, meter: Meter, sink: Sink, stop: StopFlag, record: IO[str] | None) -> None:
    transmit(
        meter,
        sink,
        stop,
        label=args.model or "replay",
        interval_s=args.interval if args.interval is not None else MODELS[args.model or "e450"].interval_s,
        count=args.count,
        pace_bps=args.baudrate if args.pace else None,
        record=record,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.verbose, name="simulate")
    try:
        if args.model is None and args.replay is None:
            raise SystemExit("error: --model: required (or --replay a capture)")
        if args.interval is not None and args.interval < MIN_INTERVAL_S:
            raise SystemExit(f"error: --interval: at least {MIN_INTERVAL_S} s")
        if args.count is not None and args.count < 1:
            raise SystemExit("error: --count: at least 1")
        for option, text, path in (
            ("key", args.key, args.key_file),
            ("auth-key", args.auth_key, args.auth_key_file),
        ):
            if text is not None and path is not None:
                raise SystemExit(f"error: --{option}: give --{option} or --{option}-file, not both")
            if path is not None:
                setattr(args, option.replace("-", "_"), _read_key_file(path, f"--{option}-file"))
                _parse_key(getattr(args, option.replace("-", "_")), f"--{option}-file")
            else:
                _parse_key(text, f"--{option}")
        if args.auth_key is not None and args.key is None:
            raise SystemExit("error: --auth-key: needs --key too")
        if args.replay is not None and not args.replay.is_file():
            raise SystemExit(f"error: --replay: no such file {args.replay}")

    except SystemExit as exc:
        print(exc.code, file=sys.stderr)
        return EXIT_CONFIG
    stop = StopFlag().install()
    sink: Sink
    link: Path | None = None
    try:
        if args.port:
            sink = SerialSink(args.port, args.baudrate)
            print(f"simulated {args.model or 'replay'} on {args.port}", flush=True)
        else:
            pty_sink = PtySink()
            sink = pty_sink
            if args.link is not None:
                make_link(args.link, pty_sink.path)
                link = args.link
            print(f"simulated {args.model or 'replay'} on {pty_sink.path}", flush=True)
    except OSError as exc:
        print(f"error: {'--port' if args.port else '--link'}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        if args.record is not None:
            try:
                record = args.record.open("a", encoding="utf-8")
            except OSError as exc:
                print(f"error: --record: {exc}", file=sys.stderr)
                return EXIT_CONFIG
            with record:
                _run(args, sink, stop, record)
        else:
            _run(args, sink, stop, None)
    finally:
        if isinstance(sink, PtySink) and not stop.requested:
            sink.drain()
        if link is not None and link.is_symlink():
            link.unlink()
        sink.close()
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
