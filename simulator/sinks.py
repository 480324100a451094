"""Where a simulated meter's pushes go, and when: the simulator's I/O.

* :class:`PtySink`: the master side of a new pseudo-terminal (a reader opens
  the slave as it would a meter's port), :func:`make_link` names it;
* :class:`SerialSink`: any ``serial_for_url`` port (``/dev/ttyUSB0``,
  ``socket://host:port``, ...);
* the record file: one JSON line per push (:func:`record_line`), what tests
  match the decoder's output against;
* :func:`transmit`: the clock. One push every interval from a
  :class:`~meterpipe.simulator.meter.Meter`, written to a sink (at the line's
  pace with ``pace_bps``) until the count is reached or the stop flag is set.

Sinks never block: what cannot be written is dropped and counted, as a meter
does when nobody reads its customer interface.
"""

from __future__ import annotations

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

from meterpipe.common.process import StopFlag
from meterpipe.common.values import decimal_text
from meterpipe.simulator.meter import Meter, SimulatedPush

log = logging.getLogger(__name__)

_SLEEP_STEP_S: Final = 0.05


class Sink(Protocol):
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


def make_link(link: Path, target: str) -> None:
    """Point the symlink ``link`` at ``target`` (the pty), replacing what was there atomically."""
    if link.is_dir() and not link.is_symlink():
        raise IsADirectoryError(f"{link} is a directory")
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    os.symlink(target, tmp)
    os.replace(tmp, link)


def record_line(model: str, seq: int, push: SimulatedPush) -> str:
    """The record of one push: JSON with its values as decimal text and its bytes as hex."""
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


def write_frames(sink: Sink, frames: Sequence[bytes], pace_bps: int | None, stop: StopFlag) -> int:
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


def transmit(
    meter: Meter,
    sink: Sink,
    stop: StopFlag,
    *,
    label: str,
    interval_s: float,
    count: int | None = None,
    pace_bps: int | None = None,
    record: IO[str] | None = None,
) -> int:
    """Write one push of ``meter`` to ``sink`` every ``interval_s``; return the pushes sent.

    Stops after ``count`` pushes (None: until ``stop`` is set). Each push is
    stamped with the local wall clock; ``record`` gets its :func:`record_line`.
    """
    seq = dropped = 0
    deadline = time.monotonic()
    while not stop.requested and (count is None or seq < count):
        push = meter.push(datetime.now().astimezone())
        seq += 1
        lost = write_frames(sink, push.frames, pace_bps, stop)
        if lost:
            dropped += lost
            log.warning("%s: %d bytes not written (nobody reading?), %d dropped so far", label, lost, dropped)
        log.debug("%s push %d: %d bytes", label, seq, len(push.data))
        if record is not None:
            record.write(record_line(label, seq, push) + "\n")
            record.flush()
        if count is not None and seq >= count:
            break
        deadline += interval_s
        while not stop.requested and (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(remaining, _SLEEP_STEP_S))
    log.info("%s: stopped after %d pushes, %d bytes dropped", label, seq, dropped)
    return seq
