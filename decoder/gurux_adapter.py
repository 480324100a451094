"""The one place gurux-dlms is used: A-XDR data parsing, as reference and fallback.

gurux-dlms 1.0.203 has no type hints, prints to stdout and returns its own
wrapper types (GXStructure, GXUInt32, GXDateTime, bytearray ...). This module
silences it, catches what it raises, and converts everything into the plain
types decoder.axdr produces, so that no GX* object leaves it and the two
parsers can be compared value for value (tests/decoder/test_differential.py).

Known differences, kept out of the comparison: gurux returns utf8-string
(0x0C) as hex text, and skips compact-array (0x13) without decoding it.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

from meterpipe.common.errors import DecodeError, TruncatedError, UnsupportedError
from meterpipe.decoder.axdr import BitString, DateBytes, DateTimeBytes, Structure, TimeBytes


def _gurux() -> Any:
    from gurux_dlms import GXByteBuffer, GXDLMSSettings
    from gurux_dlms.internal._GXCommon import _GXCommon
    from gurux_dlms.internal._GXDataInfo import _GXDataInfo

    return GXByteBuffer, GXDLMSSettings, _GXCommon, _GXDataInfo


def _datetime_bytes(value: Any) -> bytes:
    from gurux_dlms import GXByteBuffer, GXDLMSSettings
    from gurux_dlms.enums import DataType
    from gurux_dlms.internal._GXCommon import _GXCommon

    kind = type(value).__name__
    data_type = {"GXDate": DataType.DATE, "GXTime": DataType.TIME}.get(kind, DataType.DATETIME)
    buf = GXByteBuffer()
    _GXCommon.setData(GXDLMSSettings(False, None), buf, data_type, value)
    return bytes(buf.array()[1:])  # drop the type tag


def _convert(value: Any) -> Any:
    kind = type(value).__name__
    if kind == "GXStructure":
        return Structure(_convert(v) for v in value)
    if isinstance(value, list):
        return [_convert(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return str(value)
    if kind == "GXBitString":
        return BitString(str(value))
    if kind == "GXDateTime":
        return DateTimeBytes(_datetime_bytes(value))
    if kind == "GXDate":
        return DateBytes(_datetime_bytes(value))
    if kind == "GXTime":
        return TimeBytes(_datetime_bytes(value))
    if kind == "GXEnum":
        return int(value.value)
    raise UnsupportedError(f"gurux returned an unknown value type {kind}")


def parse_all(body: bytes) -> Any:
    """Decode one A-XDR value that fills ``body``, with gurux-dlms."""
    GXByteBuffer, GXDLMSSettings, common, data_info = _gurux()
    buf = GXByteBuffer(bytearray(body))
    info = data_info()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            value = common.getData(GXDLMSSettings(False, None), buf, info)
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError) as exc:
        raise DecodeError(f"gurux-dlms could not decode the body: {exc}", data=body) from exc
    except RecursionError as exc:  # gurux recurses once per array/structure level
        raise DecodeError("gurux-dlms: A-XDR body nested too deeply to decode", data=body) from exc
    if not info.complete:
        raise TruncatedError("gurux-dlms: A-XDR body incomplete", data=body)
    if buf.position != len(body):
        raise TruncatedError(f"{len(body) - buf.position} bytes after the notification body", data=body)
    try:
        return _convert(value)
    except RecursionError as exc:
        raise DecodeError("gurux-dlms: A-XDR body nested too deeply to convert", data=body) from exc
