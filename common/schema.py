"""The wire schema: every message that crosses a meterpipe socket.

This is the only module that calls msgpack. Messages are msgpack maps (so that
extra subscribers written in any language can read them) with a schema version
``v``. Sockets and topics:

* frame   reader -> decoder (PUSH/PULL), single part: one link-layer frame.
* reading decoder -> PUB, ``[b"reading/<meter>", payload]``: one decoded push.
* status  decoder -> PUB, ``[b"status/<meter>", payload]``: per-stage counters.

Values are exact: a number travels as integer mantissa ``m`` and decimal
exponent ``e`` (``value = m * 10**e``), never as a binary float; identifiers
and other text travel as strings with ``e = 0``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack

from meterpipe.common.errors import SchemaError

if TYPE_CHECKING:
    from decimal import Decimal

SCHEMA_VERSION = 1

READING_TOPIC = b"reading/"
STATUS_TOPIC = b"status/"

_METER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_OBIS = re.compile(r"^\d{1,3}-\d{1,3}:\d{1,3}\.\d{1,3}\.\d{1,3}(\*\d{1,3})?$")
_VALID_OBIS: set[str] = set()  # a cache of OBIS texts already checked, bounded in Reading.__post_init__


class LinkLayer(enum.StrEnum):
    """How a meter frames its pushes on the wire."""

    HDLC = "hdlc"
    MBUS = "mbus"
    APDU = "apdu"
    DSMR = "dsmr"  # P1 telegrams
    AUTO = "auto"


def check_meter_name(name: str) -> str:
    """Meter names become topic and file names: keep them to a safe alphabet."""
    if not isinstance(name, str) or not _METER_NAME.match(name):
        raise SchemaError(
            f"invalid meter name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return name


def reading_topic(meter: str) -> bytes:
    return READING_TOPIC + meter.encode()


def status_topic(meter: str) -> bytes:
    return STATUS_TOPIC + meter.encode()


def meter_of_topic(topic: bytes) -> str:
    """``b"reading/house"`` -> ``"house"``."""
    _, sep, meter = topic.partition(b"/")
    if not sep or not meter:
        raise SchemaError(f"topic {topic[:80]!r} has no meter part")
    return meter.decode("utf-8", "replace")


# --- values -----------------------------------------------------------------


def decimal_text(mantissa: int, exponent: int) -> str:
    """Render ``mantissa * 10**exponent`` exactly as decimal text (``230.1``)."""
    if exponent >= 0:
        return str(mantissa * 10**exponent)
    sign = "-" if mantissa < 0 else ""
    digits = str(abs(mantissa)).rjust(-exponent + 1, "0")
    return f"{sign}{digits[:exponent]}.{digits[exponent:]}"


def split_decimal(value: Decimal | float | int) -> tuple[int, int]:
    """Exact (mantissa, exponent) of a number; floats go through their shortest repr."""
    if isinstance(value, bool):
        return int(value), 0
    if isinstance(value, int):
        return value, 0
    from decimal import Decimal  # the decoder's mapping calls this: readers never load decimal
    dec = value if isinstance(value, Decimal) else Decimal(repr(float(value)))
    if not dec.is_finite():
        raise SchemaError(f"value {value!r} is not a finite number")
    sign, digits, exp = dec.as_tuple()
    assert isinstance(exp, int)
    mantissa = int("".join(map(str, digits)) or "0")
    return (-mantissa if sign else mantissa), exp


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of a push: OBIS code, stable name, exact value, unit."""

    obis: str
    name: str
    value: int | str
    exponent: int = 0
    unit: str | None = None

    def __post_init__(self) -> None:
        if self.obis not in _VALID_OBIS:  # the same few codes recur: match each once
            if not isinstance(self.obis, str) or not _OBIS.match(self.obis):
                raise SchemaError(f"invalid OBIS code {self.obis!r}")
            if len(_VALID_OBIS) < 10_000:
                _VALID_OBIS.add(self.obis)
        if isinstance(self.value, bool) or not isinstance(self.value, (int, str)):
            raise SchemaError(f"reading {self.obis}: value must be int or str")
        if isinstance(self.value, str) and self.exponent != 0:
            raise SchemaError(f"reading {self.obis}: text value with an exponent")

    @property
    def is_number(self) -> bool:
        return isinstance(self.value, int)

    def text(self) -> str:
        """The value as exact decimal text (``"0.09"``) or the text itself."""
        if isinstance(self.value, str):
            return self.value
        return decimal_text(self.value, self.exponent)

    def json_value(self) -> int | float | str:
        """The value for JSON: int when whole, float parsed from exact text, else str."""
        if isinstance(self.value, str):
            return self.value
        if self.exponent >= 0:
            return int(self.text())
        return float(self.text())

    def as_json(self) -> dict[str, Any]:
        return {"obis": self.obis, "name": self.name, "value": self.json_value(), "unit": self.unit}


@dataclass(frozen=True, slots=True)
class Push:
    """Everything the decoder learnt from one complete push of a meter."""

    readings: tuple[Reading, ...]
    meter_id: str | None = None
    system_title: str | None = None  # hex
    time: str | None = None  # ISO-8601 as the meter stated it, offset kept when sent
    encrypted: bool = False
    authenticated: bool = False  # GCM tag verified
    invocation_counter: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "meter_id": self.meter_id,
            "system_title": self.system_title,
            "time": self.time,
            "authenticated": self.authenticated,
            "readings": [r.as_json() for r in self.readings],
        }


# --- messages ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    """Reader -> decoder: one link-layer frame as cut from the serial stream."""

    meter: str
    seq: int
    received_ns: int
    link: LinkLayer
    data: bytes
    dropped: int = 0  # frames this reader has dropped so far (decoder away)

    def __post_init__(self) -> None:
        check_meter_name(self.meter)


@dataclass(frozen=True, slots=True)
class ReadingsMessage:
    """Decoder -> PUB: one decoded push of one meter."""

    meter: str
    seq: int  # per-meter push counter of this decoder run, consecutive
    received_ns: int  # receive time of the push's last frame
    push: Push
    frame_seq: int = 0  # reader sequence number of the push's last frame


@dataclass(frozen=True, slots=True)
class Status:
    """Decoder -> PUB: per-stage counters and the last error of one meter."""

    meter: str
    sent_ns: int
    counters: Mapping[str, int] = field(default_factory=dict)
    last_error: str | None = None
    last_error_kind: str | None = None
    last_push_ns: int | None = None


COUNTERS = (
    "bytes",
    "frames_ok",
    "checksum_errors",
    "truncated_errors",
    "sequence_errors",
    "decrypt_errors",
    "auth_errors",
    "replay_errors",
    "unsupported",
    "pushes_out",
    "reader_dropped",
)


# --- encode / decode ----------------------------------------------------------


def _pack(obj: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def _unpack(payload: bytes, what: str) -> dict[str, Any]:
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise SchemaError(f"{what}: not msgpack ({type(exc).__name__})", data=payload) from exc
    if not isinstance(obj, dict) or obj.get("v") != SCHEMA_VERSION or obj.get("t") != what:
        raise SchemaError(f"{what}: wrong message type or schema version", data=payload)
    return obj


def _get(obj: Mapping[str, Any], key: str, types: type | tuple[type, ...], what: str) -> Any:
    value = obj.get(key)
    allowed = types if isinstance(types, tuple) else (types,)
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        raise SchemaError(f"{what}: field {key!r} missing or of the wrong type")
    return value


def encode_frame(frame: Frame) -> bytes:
    return _pack(
        {
            "v": SCHEMA_VERSION,
            "t": "frame",
            "meter": frame.meter,
            "seq": frame.seq,
            "rx": frame.received_ns,
            "link": frame.link.value,
            "data": frame.data,
            "dropped": frame.dropped,
        }
    )


def decode_frame(payload: bytes) -> Frame:
    obj = _unpack(payload, "frame")
    try:
        return Frame(
            meter=_get(obj, "meter", str, "frame"),
            seq=_get(obj, "seq", int, "frame"),
            received_ns=_get(obj, "rx", int, "frame"),
            link=LinkLayer(_get(obj, "link", str, "frame")),
            data=_get(obj, "data", bytes, "frame"),
            dropped=_get(obj, "dropped", int, "frame"),
        )
    except ValueError as exc:
        raise SchemaError(f"frame: {exc}") from exc


def _reading_to_wire(r: Reading) -> list[Any]:
    return [r.obis, r.name, r.value, r.exponent, r.unit]


def _reading_from_wire(item: Any) -> Reading:
    if not isinstance(item, list) or len(item) != 5:
        raise SchemaError("reading: a value is not [obis, name, value, exponent, unit]")
    obis, name, value, exponent, unit = item
    if (
        not isinstance(obis, str)
        or not isinstance(name, str)
        or not isinstance(exponent, int)
        or not (unit is None or isinstance(unit, str))
    ):
        raise SchemaError(f"reading: value {obis!r} has fields of the wrong type")
    return Reading(obis, name, value, exponent, unit)


def encode_readings(msg: ReadingsMessage) -> bytes:
    p = msg.push
    return _pack(
        {
            "v": SCHEMA_VERSION,
            "t": "reading",
            "meter": msg.meter,
            "seq": msg.seq,
            "fseq": msg.frame_seq,
            "rx": msg.received_ns,
            "meter_id": p.meter_id,
            "system_title": p.system_title,
            "time": p.time,
            "enc": p.encrypted,
            "auth": p.authenticated,
            "ic": p.invocation_counter,
            "values": [_reading_to_wire(r) for r in p.readings],
        }
    )


def decode_readings(payload: bytes) -> ReadingsMessage:
    obj = _unpack(payload, "reading")
    what = "reading"
    opt_str = (str, type(None))
    push = Push(
        readings=tuple(_reading_from_wire(x) for x in _get(obj, "values", list, what)),
        meter_id=_get(obj, "meter_id", opt_str, what),
        system_title=_get(obj, "system_title", opt_str, what),
        time=_get(obj, "time", opt_str, what),
        encrypted=_get(obj, "enc", bool, what),
        authenticated=_get(obj, "auth", bool, what),
        invocation_counter=_get(obj, "ic", (int, type(None)), what),
    )
    return ReadingsMessage(
        meter=_get(obj, "meter", str, what),
        seq=_get(obj, "seq", int, what),
        received_ns=_get(obj, "rx", int, what),
        push=push,
        frame_seq=_get(obj, "fseq", int, what),
    )


def encode_status(status: Status) -> bytes:
    return _pack(
        {
            "v": SCHEMA_VERSION,
            "t": "status",
            "meter": status.meter,
            "sent": status.sent_ns,
            "counters": dict(status.counters),
            "last_error": status.last_error,
            "last_error_kind": status.last_error_kind,
            "last_push": status.last_push_ns,
        }
    )


def decode_status(payload: bytes) -> Status:
    obj = _unpack(payload, "status")
    what = "status"
    opt_str = (str, type(None))
    counters = _get(obj, "counters", dict, what)
    if not all(isinstance(k, str) and isinstance(v, int) for k, v in counters.items()):
        raise SchemaError("status: counters must map names to integers")
    return Status(
        meter=_get(obj, "meter", str, what),
        sent_ns=_get(obj, "sent", int, what),
        counters=counters,
        last_error=_get(obj, "last_error", opt_str, what),
        last_error_kind=_get(obj, "last_error_kind", opt_str, what),
        last_push_ns=_get(obj, "last_push", (int, type(None)), what),
    )


def encode_replay_request(since: Mapping[str, int]) -> bytes:
    """Publisher -> decoder (REQ/REP): the receive time of the last push it has, per meter."""
    return _pack({"v": SCHEMA_VERSION, "t": "replay", "since": dict(since)})


def decode_replay_request(payload: bytes) -> dict[str, int]:
    obj = _unpack(payload, "replay")
    since: dict[str, int] = _get(obj, "since", dict, "replay")
    if not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in since.items()):
        raise SchemaError("replay: since must map meter names to receive times (ns)")
    return since


def encode_replay_reply(payloads: list[bytes]) -> bytes:
    """Decoder -> publisher: the encoded reading messages it missed, oldest first."""
    return _pack({"v": SCHEMA_VERSION, "t": "replayed", "readings": payloads})


def decode_replay_reply(payload: bytes) -> list[bytes]:
    obj = _unpack(payload, "replayed")
    items: list[bytes] = _get(obj, "readings", list, "replayed")
    if not all(isinstance(x, bytes) for x in items):
        raise SchemaError("replayed: readings must be encoded reading messages")
    return items


def readings_json(msg: ReadingsMessage) -> dict[str, Any]:
    """The JSON shape shared by ``meterpipe tap --json`` and the MQTT json topic."""
    p = msg.push
    return {
        "meter": msg.meter,
        "seq": msg.seq,
        "meter_id": p.meter_id,
        "time": p.time,
        "received": msg.received_ns / 1e9,
        "authenticated": p.authenticated,
        "readings": [r.as_json() for r in p.readings],
    }
