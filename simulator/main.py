"""``meterpipe simulate``: a simulated smart meter on a pty or a serial port.

The command writes the pushes of a :class:`~meterpipe.simulator.meter.MeterSimulator`
to a serial port (``--port``, any ``serial_for_url`` URL) or to a pseudo-terminal
it opens and names on stdout, so a reader can be pointed at it as at a real meter::

    $ meterpipe simulate --model e450 --link /tmp/meter0
    simulated e450 on /dev/pts/7
"""

from __future__ import annotations

import argparse
import binascii
import fcntl
import json
import logging
import os
import sys
import termios
import time
import tty
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Final, Protocol

from meterpipe.common import config_fields
from meterpipe.common.errors import ConfigError
from meterpipe.common.logs import setup_logging
from meterpipe.common.process import StopFlag
from meterpipe.common.schema import decimal_text
from meterpipe.simulator.meter import MeterSimulator, SimulatedPush
from meterpipe.simulator.models import MODELS

log = logging.getLogger(__name__)

_SLEEP_STEP_S: Final = 0.05
MIN_INTERVAL_S: Final = 0.05


class _Sink(Protocol):
    def write(self, data: bytes) -> int: ...
    def close(self) -> None: ...


class PtySink:
    """The master side of a pty in raw mode; writes never block (what does not fit is dropped)."""

    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        flags = fcntl.fcntl(self._master, fcntl.F_GETFL)
        fcntl.fcntl(self._master, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        self.path = os.ttyname(self._slave)

    def write(self, data: bytes) -> int:
        try:
            return os.write(self._master, data)
        except BlockingIOError:
            return 0

    def pending(self) -> int:
        """Bytes written but not yet read by whoever has the pty open."""
        buf = fcntl.ioctl(self._slave, termios.FIONREAD, b"\0\0\0\0")
        return int.from_bytes(buf, sys.byteorder)

    def drain(self, timeout_s: float = 2.0) -> None:
        """Give a reader up to ``timeout_s`` to take what was written (closing drops it)."""
        deadline = time.monotonic() + timeout_s
        time.sleep(0.2)  # the kernel hands written bytes to the reader side asynchronously
        while self.pending() and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        os.close(self._master)
        os.close(self._slave)


class SerialSink:
    """A port opened with ``serial.serial_for_url``; a write that times out is dropped."""

    def __init__(self, url: str, baudrate: int) -> None:
        import serial  # the pty path needs no pyserial

        self._serial_error: type[Exception] = serial.SerialException
        self._port: Any = serial.serial_for_url(url, baudrate=baudrate, write_timeout=1.0)

    def write(self, data: bytes) -> int:
        try:
            return int(self._port.write(data) or 0)
        except self._serial_error:
            return 0

    def close(self) -> None:
        self._port.close()


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


def _record_line(model: str, seq: int, push: SimulatedPush) -> str:
    values: dict[str, dict[str, Any]] = {}
    for obis, (value, exponent, unit) in push.values.items():
        shown: int | str = value
        if isinstance(value, int):
            shown = decimal_text(value, exponent) if exponent < 0 else value * 10**exponent
        values[obis] = {"value": shown, "unit": unit}
    return json.dumps(
        {
            "model": model,
            "seq": seq,
            "meter_id": push.meter_id,
            "time": push.time.isoformat(),
            "invocation_counter": push.invocation_counter,
            "values": values,
            "hex": push.data.hex(),
        }
    )


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
    p.add_argument("--baudrate", type=int, default=115200, help="line speed (default 115200)")
    p.add_argument("--pace", action="store_true", help="write frames at the pace of --baudrate")
    p.add_argument("-v", "--verbose", action="store_true", help="log every push")
    return p


def _make_link(link: Path, target: str) -> None:
    if link.is_dir() and not link.is_symlink():
        raise SystemExit(f"error: --link: {link} is a directory")
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _write(sink: _Sink, frames: Sequence[bytes], pace_bps: int | None, stop: StopFlag) -> int:
    """Write the frames; return the number of bytes that could not be written."""
    dropped = 0
    for frame in frames:
        written = sink.write(frame)
        dropped += len(frame) - written
        if pace_bps:
            time.sleep(len(frame) * 10 / pace_bps)
        if stop.requested:
            break
    return dropped


def _run(args: argparse.Namespace, sink: _Sink, stop: StopFlag, record: IO[str] | None) -> None:
    sim = None
    replay = b""
    if args.replay is not None:
        replay = read_capture(args.replay)
    else:
        sim = MeterSimulator(
            args.model,
            key=_parse_key(args.key, "--key"),
            auth_key=_parse_key(args.auth_key, "--auth-key"),
            seed=args.seed,
            serial=args.serial,
        )
    interval = args.interval if args.interval is not None else MODELS[args.model or "e450"].interval_s
    pace = args.baudrate if args.pace else None
    label = args.model or "replay"
    seq = dropped = 0
    deadline = time.monotonic()
    while not stop.requested and (args.count is None or seq < args.count):
        now = datetime.now().astimezone()
        if sim is not None:
            push = sim.push(now)
        else:
            push = SimulatedPush(replay, (replay,), {}, "", now.replace(microsecond=0), None)
        seq += 1
        lost = _write(sink, push.frames, pace, stop)
        if lost:
            dropped += lost
            log.warning("%s: %d bytes not written (nobody reading?), %d dropped so far", label, lost, dropped)
        log.debug("%s push %d: %d bytes", label, seq, len(push.data))
        if record is not None:
            record.write(_record_line(label, seq, push) + "\n")
            record.flush()
        if args.count is not None and seq >= args.count:
            break
        deadline += interval
        while not stop.requested and (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(remaining, _SLEEP_STEP_S))
    log.info("%s: stopped after %d pushes, %d bytes dropped", label, seq, dropped)


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
        return 2
    stop = StopFlag().install()
    sink: _Sink
    link: Path | None = None
    try:
        if args.port:
            sink = SerialSink(args.port, args.baudrate)
            print(f"simulated {args.model or 'replay'} on {args.port}", flush=True)
        else:
            pty_sink = PtySink()
            sink = pty_sink
            if args.link is not None:
                _make_link(args.link, pty_sink.path)
                link = args.link
            print(f"simulated {args.model or 'replay'} on {pty_sink.path}", flush=True)
    except (OSError, SystemExit) as exc:
        print(f"error: {'--port' if args.port else '--link'}: {exc}", file=sys.stderr)
        return 2
    try:
        if args.record is not None:
            with args.record.open("a", encoding="utf-8") as record:
                _run(args, sink, stop, record)
        else:
            _run(args, sink, stop, None)
    finally:
        if isinstance(sink, PtySink) and not stop.requested:
            sink.drain()
        if link is not None and link.is_symlink():
            link.unlink()
        sink.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
