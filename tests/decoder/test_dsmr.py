"""P1 (DSMR) telegrams from the corpus decode to their expected readings."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from meterpipe.common.errors import MeterpipeError
from meterpipe.common.link.crc import crc16_arc
from meterpipe.common.schema import LinkLayer
from meterpipe.common.values import Push
from meterpipe.decoder.dsmr import dsmr_time
from meterpipe.decoder.session import MeterDecoder
from tests.conftest import CORPUS, needs_corpus, vector

DSMR = [v for v in CORPUS if v["transport"] == "dsmr"]


def _decode(data: bytes, chunk: int = 0) -> list[Push | MeterpipeError]:
    decoder = MeterDecoder("p1", link=LinkLayer.DSMR)
    if not chunk:
        return decoder.feed(data)
    out: list[Push | MeterpipeError] = []
    for i in range(0, len(data), chunk):
        out += decoder.feed(data[i : i + chunk])
    return out


@needs_corpus
@pytest.mark.parametrize("v", DSMR, ids=lambda v: v["id"])
def test_telegram_decodes_to_expected_readings_whole_bytewise_and_in_garbage(v: dict[str, Any]) -> None:
    data = v["telegram"].encode("ascii")
    results = [_decode(data), _decode(data, chunk=1), _decode(b"\x00garbage!\r\n" + data + b"/x\r\n")]
    for out in results:
        pushes = [o for o in out if isinstance(o, Push)]
        assert len(pushes) == 1 and pushes[0] == next(o for o in results[0] if isinstance(o, Push))
    push = next(o for o in results[0] if isinstance(o, Push))
    got = {r.obis: r for r in push.readings}
    for obis, want in v["expect"]["readings"].items():
        reading = got[obis]
        if isinstance(want["value"], str):
            assert reading.text() == want["value"], obis
        else:
            assert Decimal(reading.text()) == Decimal(str(want["value"])), obis
            assert reading.unit == want.get("unit", reading.unit), obis
    if v["expect"].get("time"):
        assert push.time is not None and push.time == dsmr_time(v["expect"]["time"])


@needs_corpus
def test_a_flipped_byte_fails_the_crc_and_the_next_telegram_decodes() -> None:
    data = bytearray(vector("dsmrp-kaifa-nl-v42")["telegram"].encode())
    good = bytes(data)
    data[60] ^= 0x01
    out = _decode(bytes(data) + good)
    assert [type(o).__name__ for o in out] == ["ChecksumError", "Push"]
    assert out[0].kind == "checksum"


@needs_corpus
def test_a_telegram_cut_short_is_rejected_and_the_next_decodes() -> None:
    good = vector("dsmrp-iskra-am550-nl-v5-2mbus")["telegram"].encode()
    out = _decode(good[:200] + good)
    assert [o.kind if isinstance(o, MeterpipeError) else "push" for o in out] == ["truncated", "push"]


def test_crc16_arc_check_value() -> None:
    assert crc16_arc(b"123456789") == 0xBB3D  # CRC catalogue check value of CRC-16/ARC


def test_dsmr_times() -> None:
    assert dsmr_time("200426223325S") == "2020-04-26T22:33:25+02:00"
    assert dsmr_time("161113205757W") == "2016-11-13T20:57:57+01:00"
    assert dsmr_time("20240111 09:35:00") == "2024-01-11T09:35:00"
    assert dsmr_time("632525252525W") is None  # Fluvius sends this for "no peak yet"


def test_obis_parts_above_255_are_skipped_not_fatal() -> None:
    telegram = b"/ISK5\\2M550T-1012\r\n\r\n1-0:1.8.1(000001.000*kWh)\r\n999-0:1.8.1(000002.000*kWh)\r\n!\r\n"
    (push,) = _decode(telegram)
    assert isinstance(push, Push) and [r.obis for r in push.readings] == ["1-0:1.8.1"]
