"""The serial port of one meter: open it, notice when it is lost, reopen it with backoff.

:func:`open_serial` opens anything ``serial.serial_for_url`` understands (device
paths, ptys, ``socket://host:port``, ``rfc2217://``). :class:`PortKeeper` wraps an
opener and never blocks longer than one read timeout, so the reader's loop keeps
serving its socket and sees a stop request while the port is away:

* a read error (USB unplug, pty closed, bridge down) closes the port, logs once at
  warning, and schedules reopening;
* failed opens are retried after 0.5 s, 1 s, 2 s ... up to 30 s (plus jitter),
  logged at debug per try; the port coming back is logged once at info.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from typing import Final, Protocol

import serial

from meterpipe.common.config import MeterConfig
from meterpipe.common.errors import ConfigError
from meterpipe.common.process import Backoff

log = logging.getLogger(__name__)

READ_TIMEOUT: Final = 0.5  # seconds a read may block: bounds the reaction time (and the idle wake-ups: 2/s)
READ_MAX: Final = 4096


class SerialLike(Protocol):
    """The part of ``serial.Serial`` the reader uses."""

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def close(self) -> None: ...


def open_serial(meter: MeterConfig) -> SerialLike:
    """Open the meter's port as configured.

    Raises ``serial.SerialException``/``OSError`` when the port is not there (worth
    retrying), and ``ConfigError`` when pyserial refuses the settings themselves (an
    unknown URL scheme, a baud rate the driver rejects): retrying cannot fix those.
    """
    try:
        port: SerialLike = serial.serial_for_url(
            meter.port,
            baudrate=meter.baudrate,
            parity=meter.parity,
            bytesize=meter.bytesize,
            stopbits=meter.stopbits,
            timeout=READ_TIMEOUT,
        )
    except ValueError as exc:
        raise ConfigError(f"meters.{meter.name}.port", f"cannot use {meter.port!r}: {exc}") from exc
    return port


def describe_error(exc: BaseException) -> str:
    """A reason a person can act on, for a failed open or read."""
    code = getattr(exc, "errno", None)
    text = str(exc) or type(exc).__name__
    if code == errno.ENOENT:
        return f"no such device ({text}): is the meter's adapter plugged in?"
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied ({text}): add the user to the dialout group"
    if code == errno.EBUSY:
        return f"device busy ({text}): is another program using the port?"
    if code == errno.ECONNREFUSED:
        return f"connection refused ({text}): is the serial bridge running?"
    return text


def _tries(n: int) -> str:
    return f"{n} try" if n == 1 else f"{n} tries"


class PortKeeper:
    """Keeps one port open across losses; every call returns within one read timeout."""

    def __init__(
        self,
        label: str,
        open_port: Callable[[], SerialLike],
        backoff: Backoff | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._label = label  # the port URL, as the user wrote it
        self._open_port = open_port
        self._backoff = backoff or Backoff()
        self._monotonic = monotonic
        self._port: SerialLike | None = None
        self._next_try = 0.0  # monotonic time of the next open attempt
        self._failed_tries = 0  # failed opens since the port was last open
        self._warned: str | None = None  # reason last logged at warning in this outage
        self._ever_open = False
        self._proven = False  # the open port has delivered bytes
        self.opens = 0  # successful opens so far (a change means a fresh byte stream)
        self.losses = 0

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def retry_in(self) -> float:
        """Seconds until the next open attempt (0 when open or due)."""
        if self._port is not None:
            return 0.0
        return max(0.0, self._next_try - self._monotonic())

    def read(self) -> bytes | None:
        """Bytes from the port (maybe empty after a timeout), or None while it is not open."""
        if self._port is None and not self._try_open():
            return None
        assert self._port is not None
        try:
            data = self._port.read(min(READ_MAX, max(1, self._port.in_waiting)))
        except (serial.SerialException, OSError) as exc:
            self._lost(describe_error(exc))
            return None
        if data and not self._proven:
            # Only a port that delivers bytes resets the backoff: one that opens and
            # fails at once again and again is retried ever more slowly, not every 0.5 s.
            self._proven = True
            self._backoff.reset()
        return data

    def close(self) -> None:
        if self._port is not None:
            port, self._port = self._port, None
            try:
                port.close()
            except (serial.SerialException, OSError) as exc:
                log.debug("port %s: error while closing: %s", self._label, exc)

    def _lost(self, reason: str) -> None:
        self.close()
        self.losses += 1
        self._failed_tries = 0
        self._warned = reason
        self._next_try = self._monotonic() + self._backoff.next_delay()
        log.warning("port %s lost: %s; retrying", self._label, reason)

    def _try_open(self) -> bool:
        now = self._monotonic()
        if now < self._next_try:
            return False
        try:
            self._port = self._open_port()
        except (serial.SerialException, OSError) as exc:
            self._failed_tries += 1
            delay = self._backoff.next_delay()
            self._next_try = now + delay
            reason = describe_error(exc)
            if reason != self._warned:  # once per outage and reason, not once per try
                verb = "still unavailable" if self._ever_open else "cannot be opened"
                log.warning("port %s %s: %s; retrying", self._label, verb, reason)
                self._warned = reason
            log.debug("port %s: open failed (%s), next try in %.1f s", self._label, reason, delay)
            return False
        self.opens += 1
        tries = self._failed_tries + 1
        if self._ever_open:
            log.info("port %s open again after %s", self._label, _tries(tries))
        elif self._failed_tries:
            log.info("port %s open after %s", self._label, _tries(tries))
        else:
            log.info("port %s open", self._label)
        self._ever_open = True
        self._failed_tries = 0
        self._warned = None
        self._proven = False
        return True
