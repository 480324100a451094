"""``meterpipe-journal``: one journal entry per push, over journald's native protocol.

Each push becomes one datagram on the AF_UNIX SOCK_DGRAM socket
(``publishers.journal.socket``, default ``/run/systemd/journal/socket``) with the
fields ``MESSAGE`` (a one-line summary), ``PRIORITY=6``, ``SYSLOG_IDENTIFIER``,
``METER``, ``METER_ID``, ``METER_SEQ`` and one ``READING_<NAME>=<text> <unit>``
per reading, so ``journalctl METER=house -o json`` gives every value. A status
message whose ``last_error`` changed becomes one entry at ``PRIORITY=4``.

Values containing a newline use the protocol's binary form (name, newline,
64-bit little-endian length, value, newline). When the socket does not exist
(no systemd, a container), the summary line goes to stdout instead. A
datagram that is too large (EMSGSIZE) is re-sent without the READING_ fields
(the summary MESSAGE keeps the values) and logged once; meter pushes are far
below the datagram limit, so the memfd method is not implemented.
"""

from __future__ import annotations

import errno
import logging
import re
import socket
import struct
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from meterpipe.common.config import Config
from meterpipe.common.schema import ReadingsMessage, Status
from meterpipe.publishers.subscriber import Handler, run_publisher

log = logging.getLogger(__name__)

IDENTIFIER = "meterpipe"
_BAD_FIELD_CHARS = re.compile(r"[^A-Z0-9_]")

Fields = list[tuple[str, str]]


def field_name(raw: str) -> str:
    """Journal field names: A-Z, 0-9 and '_', not starting with '_' or a digit."""
    name = _BAD_FIELD_CHARS.sub("_", raw.upper()).lstrip("_")
    if not name or name[0].isdigit():
        name = "F_" + name
    return name[:64]


def encode_fields(fields: Fields) -> bytes:
    """Serialize fields in journald's native datagram format."""
    out = bytearray()
    for name, value in fields:
        data = value.encode("utf-8")
        if b"\n" in data:
            out += name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name.encode() + b"=" + data + b"\n"
    return bytes(out)


def _with_unit(text: str, unit: str | None) -> str:
    return f"{text} {unit}" if unit else text


def summary(msg: ReadingsMessage) -> str:
    parts = [f"{r.name}={_with_unit(r.text(), r.unit)}" for r in msg.push.readings]
    line = f"{msg.meter}: " + ", ".join(parts)
    return line.replace("\n", " ")


def reading_fields(msg: ReadingsMessage, with_readings: bool = True) -> Fields:
    fields: Fields = [
        ("MESSAGE", summary(msg)),
        ("PRIORITY", "6"),
        ("SYSLOG_IDENTIFIER", IDENTIFIER),
        ("METER", msg.meter),
        ("METER_ID", msg.push.meter_id or ""),
        ("METER_SEQ", str(msg.seq)),
    ]
    if with_readings:
        seen: set[str] = set()
        for r in msg.push.readings:
            name = "READING_" + field_name(r.name)
            if name in seen:
                continue
            seen.add(name)
            fields.append((name, _with_unit(r.text(), r.unit)))
    return fields


def status_fields(status: Status) -> Fields:
    kind = status.last_error_kind or "error"
    return [
        ("MESSAGE", f"{status.meter}: {kind}: {status.last_error}".replace("\n", " ")),
        ("PRIORITY", "4"),
        ("SYSLOG_IDENTIFIER", IDENTIFIER),
        ("METER", status.meter),
        ("METER_ERROR_KIND", kind),
        ("METER_ERROR", status.last_error or ""),
    ]


class JournalSink:
    """Sends field lists to the journal socket, or prints the MESSAGE when there is none."""

    def __init__(self, path: Path, out: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.out = out if out is not None else _print
        self.sent = 0
        self.printed = 0
        self.truncated = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)  # a busy journald must not stall the subscriber loop
        self._warned_missing = False
        self.dropped = 0

    def send(self, fields: Fields, fallback: Fields | None = None) -> None:
        try:
            self._sock.sendto(encode_fields(fields), str(self.path))
            self.sent += 1
            return
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE and fallback is not None:
                self.truncated += 1
                if self.truncated == 1:
                    log.warning("journal entry too large for one datagram: sending it without the "
                                "READING_ fields (the MESSAGE keeps the values)")
                self.send(fallback)
                return
            if exc.errno in (errno.EAGAIN, errno.ENOBUFS):
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("journald is not keeping up: %s entries dropped", self.dropped)
                return
            if exc.errno not in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTDIR, errno.EACCES):
                raise
            if not self._warned_missing:
                self._warned_missing = True
                log.warning("no journal socket at %s (%s): printing entries on stdout", self.path, exc.strerror)
        message = next((v for k, v in fields if k == "MESSAGE"), "")
        self.out(message)
        self.printed += 1

    def close(self) -> None:
        self._sock.close()


def _print(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class JournalHandler(Handler):
    """Every push and every new status error to journald; no catch-up (a log, not a store)."""

    def __init__(self, sink: JournalSink) -> None:
        self.sink = sink
        self._last_error: dict[str, str | None] = {}

    def on_readings(self, msg: ReadingsMessage) -> None:
        self.sink.send(reading_fields(msg), fallback=reading_fields(msg, with_readings=False))

    def on_status(self, status: Status) -> None:
        prev = self._last_error.get(status.meter)
        self._last_error[status.meter] = status.last_error
        if status.last_error and status.last_error != prev:
            self.sink.send(status_fields(status))



def build(config: Config) -> tuple[Handler, Callable[[], None]]:
    sink = JournalSink(config.publishers.journal.socket)
    return JournalHandler(sink), sink.close


def main(argv: Sequence[str] | None = None) -> int:
    return run_publisher("meterpipe-journal", "Write meter readings to the systemd journal.",
                         argv, "journal", build)


if __name__ == "__main__":
    raise SystemExit(main())
