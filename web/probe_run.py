"""The settings page's "Test this meter": listen on the meter's port for a while, with the
settings as entered (not yet saved), and report what arrived at each stage (I/O).

:func:`run_probe` opens the port the way the reader does (:func:`meterpipe.reader.port.open_serial`),
feeds what it reads to a :class:`meterpipe.decoder.probe.Probe` (the pipeline's framer and
decoder, sans-IO) until a push is decoded or the time is up, and closes the port whatever
happens. It blocks for up to ``seconds`` plus one read timeout (0.5 s): the web calls it in a
worker thread. A port that does not open gives a report with ``opened=False`` and a
one-line ``open_error``, never an exception.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

import serial

from meterpipe.common.config import MeterConfig
from meterpipe.common.errors import ConfigError
from meterpipe.decoder.probe import Probe, ProbeReport, open_failed
from meterpipe.reader.port import READ_MAX, SerialLike, describe_error, open_serial

log = logging.getLogger(__name__)

EXTRA_S: Final = 0.3  # after the first decoded push: take what is already waiting, for at most this long
_PORT_ERRORS: Final = (serial.SerialException, OSError)


def open_error(meter: MeterConfig, exc: BaseException) -> str:
    """One line on why ``meter``'s port did not open (never a traceback)."""
    if isinstance(exc, ConfigError):
        cause = exc.__cause__
        reason = str(cause) if cause is not None and str(cause) else exc.message.removeprefix(f"{exc.field}: ")
    else:
        reason = describe_error(exc)
    return " ".join(f"cannot open {meter.port}: {reason}".split())


def run_probe(
    meter: MeterConfig,
    seconds: float = 15.0,
    *,
    stop: Callable[[], bool] = lambda: False,
    open_port: Callable[[MeterConfig], SerialLike] = open_serial,
    monotonic: Callable[[], float] = time.monotonic,
    clock: Callable[[], int] = time.time_ns,
) -> ProbeReport:
    """Listen on ``meter``'s port until a push is decoded, ``seconds`` pass or ``stop()`` is true."""
    started = monotonic()
    try:
        port = open_port(meter)
    except (ConfigError, *_PORT_ERRORS) as exc:
        report = open_failed(meter, open_error(meter, exc), monotonic() - started)
        log.info("probe of meter %s: %s", meter.name, report.verdict)
        return report
    probe = Probe(meter)
    deadline = started + max(0.0, seconds)
    extra_until: float | None = None
    try:
        while not stop():
            now = monotonic()
            if now >= deadline or probe.hopeless:
                break
            if probe.done:
                extra_until = now + EXTRA_S if extra_until is None else extra_until
                if now >= extra_until:
                    break
            try:
                waiting = port.in_waiting
                if probe.done and not waiting:
                    break  # the push is in and nothing more is waiting: do not block for more
                data = port.read(min(READ_MAX, max(1, waiting)))
            except _PORT_ERRORS as exc:
                probe.lost(describe_error(exc))
                break
            probe.feed(data, clock())
    finally:
        try:
            port.close()
        except _PORT_ERRORS as exc:
            log.debug("probe of meter %s: error while closing %s: %s", meter.name, meter.port, exc)
    report = probe.report(monotonic() - started)
    log.info("probe of meter %s on %s: %s", meter.name, meter.port, report.verdict)
    return report
