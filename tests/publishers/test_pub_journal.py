"""Journal publisher: native-protocol datagrams on a fake journal socket."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from meterpipe.common.schema import Status
from meterpipe.common.values import Reading
from meterpipe.publishers.journal import (
    JournalHandler,
    JournalSink,
    encode_fields,
    field_name,
)
from tests.publishers.conftest import make_msg


def parse_native(data: bytes) -> list[tuple[str, str]]:
    """Parse journald's native protocol (both the KEY=value and the binary form)."""
    fields = []
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            i = nl + 1
        else:
            key = line
            (size,) = struct.unpack("<Q", data[nl + 1:nl + 9])
            value = data[nl + 9:nl + 9 + size]
            assert data[nl + 9 + size:nl + 10 + size] == b"\n"
            i = nl + 10 + size
        fields.append((key.decode(), value.decode()))
    return fields


@pytest.fixture
def journal_socket(tmp_path: Path) -> Iterator[tuple[Path, socket.socket]]:
    path = tmp_path / "journal.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    yield path, sock
    sock.close()


def test_reading_datagram_fields(journal_socket: tuple[Path, socket.socket]) -> None:
    path, sock = journal_socket
    sink = JournalSink(path)
    JournalHandler(sink).on_readings(make_msg(7))
    fields = dict(parse_native(sock.recv(65536)))
    sink.close()
    assert fields["MESSAGE"] == ("house: logical_device_name=LGZ1030655933512, active_energy_import=567890.7 kWh, "
                                 "active_power_import=1241 W, voltage_l1=230.1 V, current_l1=1.09 A")
    assert fields["PRIORITY"] == "6"
    assert fields["SYSLOG_IDENTIFIER"] == "meterpipe"
    assert fields["METER"] == "house"
    assert fields["METER_ID"] == "LGZ1030655933512"
    assert fields["METER_SEQ"] == "7"
    assert fields["READING_ACTIVE_ENERGY_IMPORT"] == "567890.7 kWh"
    assert fields["READING_VOLTAGE_L1"] == "230.1 V"
    assert fields["READING_LOGICAL_DEVICE_NAME"] == "LGZ1030655933512"
    assert all(k.replace("_", "").isalnum() and k.isupper() and not k.startswith("_") for k in fields)


def test_newline_value_uses_binary_form(journal_socket: tuple[Path, socket.socket]) -> None:
    path, sock = journal_socket
    sink = JournalSink(path)
    msg = make_msg(1, readings=(Reading("0-0:96.13.0", "text-message", "line one\nline two"),))
    JournalHandler(sink).on_readings(msg)
    raw = sock.recv(65536)
    sink.close()
    assert b"READING_TEXT_MESSAGE\n" + struct.pack("<Q", 17) + b"line one\nline two\n" in raw
    fields = dict(parse_native(raw))
    assert fields["READING_TEXT_MESSAGE"] == "line one\nline two"
    assert "\n" not in fields["MESSAGE"]


def test_status_error_sent_once_at_warning(journal_socket: tuple[Path, socket.socket]) -> None:
    path, sock = journal_socket
    sink = JournalSink(path)
    handler = JournalHandler(sink)
    err = Status("house", 1, {}, "authentication failed: check the auth key of meter 'house'", "auth")
    handler.on_status(Status("house", 0))
    handler.on_status(err)
    handler.on_status(err)  # unchanged: not sent again
    handler.on_status(Status("house", 2))
    handler.on_status(err)  # came back: sent again
    first = dict(parse_native(sock.recv(65536)))
    second = dict(parse_native(sock.recv(65536)))
    sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        sock.recv(65536)
    sink.close()
    assert first["PRIORITY"] == "4"
    assert first["METER"] == "house"
    assert first["MESSAGE"] == "house: auth: authentication failed: check the auth key of meter 'house'"
    assert second == first


def test_no_socket_prints_summary(tmp_path: Path) -> None:
    lines: list[str] = []
    sink = JournalSink(tmp_path / "missing.sock", out=lines.append)
    JournalHandler(sink).on_readings(make_msg(1))
    sink.close()
    assert lines == [("house: logical_device_name=LGZ1030655933512, active_energy_import=567890.1 kWh, "
                      "active_power_import=1235 W, voltage_l1=230.1 V, current_l1=1.09 A")]
    assert sink.printed == 1


def test_too_large_datagram_falls_back_to_summary_fields(tmp_path: Path) -> None:
    path = tmp_path / "journal.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    sink = JournalSink(path)
    sink._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    big = tuple(Reading("1-0:1.8.0", f"r{i}", i, 0, "Wh") for i in range(300))
    msg = make_msg(1, readings=big)
    JournalHandler(sink).on_readings(msg)
    fields = dict(parse_native(sock.recv(1 << 20)))
    sink.close()
    sock.close()
    assert sink.truncated == 1
    assert "READING_R1" not in fields
    assert "r299=299 Wh" in fields["MESSAGE"]


def test_field_name() -> None:
    assert field_name("active_power-import") == "ACTIVE_POWER_IMPORT"
    assert field_name("_x") == "X"
    assert field_name("1st") == "F_1ST"
    assert encode_fields([("A", "1")]) == b"A=1\n"
