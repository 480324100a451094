"""Every DLMS capture in the shared corpus decodes to its expected readings.

Fed three ways (whole, byte by byte, wrapped in garbage) through the full
sans-IO path of meterpipe.decoder.session.MeterDecoder.
"""

from __future__ import annotations

import random
import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from meterpipe.common.errors import MeterpipeError
from meterpipe.common.values import Push, Reading
from meterpipe.decoder.session import MeterDecoder
from tests.conftest import DLMS_VECTORS, keys, model_hint, needs_corpus

pytestmark = [needs_corpus, pytest.mark.corpus]

# Where the vector's expected value comes from a golden master with a known
# scaling quirk, compare modulo a power of ten; the reason is the vector's own note.
QUIRKS = {
    ("ams-lg-e450-ch-rawapdu-gh934", "1-0:32.7.0"): "amsreader integer-voltage quirk (raw 234 V)",
    ("ams-lg-e450-ch-rawapdu-gh934", "1-0:52.7.0"): "amsreader integer-voltage quirk",
    ("ams-lg-e450-ch-rawapdu-gh934", "1-0:72.7.0"): "amsreader integer-voltage quirk",
    ("ams-kamstrup-se-gh239-2", "1-0:1.8.0"): "Swedish Kamstrup energy in Wh, golden master uses Norwegian 0.01 kWh",
}
UNIT_FACTORS = {("kWh", "Wh"): Decimal(1000), ("kW", "W"): Decimal(1000), ("kvarh", "varh"): Decimal(1000)}


def _decode(v: dict[str, Any], how: str = "whole") -> list[Push | MeterpipeError]:
    key, auth = keys(v)
    decoder = MeterDecoder("corpus", key=key, auth_key=auth, model=model_hint(v))
    data = bytes.fromhex(v["bytes_hex"])
    if v["transport"] == "apdu":
        return decoder.feed_apdu(data)
    if how == "bytes":
        out: list[Push | MeterpipeError] = []
        for i in range(len(data)):
            out += decoder.feed(data[i : i + 1])
        return out
    if how == "garbage":
        rng = random.Random(v["id"])
        junk = bytes(rng.choice(b"\x00\x11\x22\x55\xaa\xff\x13\x03") for _ in range(40))
        return decoder.feed(junk + data + junk)
    return decoder.feed(data)


def _pushes(out: list[Push | MeterpipeError]) -> list[Push]:
    return [o for o in out if isinstance(o, Push)]


def _by_obis(push: Push) -> dict[str, Reading]:
    return {r.obis: r for r in push.readings}


def _same_code_other_channel(push: Push, obis: str) -> Reading | None:
    """Golden masters (amsreader) report electricity codes with channel B=0."""
    a, rest = obis.split("-", 1)
    tail = rest.split(":", 1)[1]
    return next((r for r in push.readings if r.obis.startswith(a + "-") and r.obis.endswith(":" + tail)), None)


def _same_modulo_power_of_ten(ours: Decimal, expected: Decimal) -> bool:
    if ours == 0 or expected == 0:
        return ours == expected
    ratio = abs(ours / expected)
    k = round(ratio.log10())
    return abs(ratio / Decimal(10) ** k - 1) <= Decimal("0.001")


def _check_value(vid: str, obis: str, reading: Reading, exp: dict[str, Any]) -> None:
    want = exp["value"]
    if isinstance(want, str):
        assert reading.text() == want, f"{vid} {obis}"
        return
    ours = Decimal(reading.text())
    expected = Decimal(str(want))
    unit = exp.get("unit")
    if unit is None or (vid, obis) in QUIRKS:
        assert _same_modulo_power_of_ten(ours, expected), f"{vid} {obis}: {ours} vs {expected} (mod 10^k)"
        return
    if unit != reading.unit:
        factor = UNIT_FACTORS.get((unit, reading.unit or ""))
        assert factor is not None, f"{vid} {obis}: unit {reading.unit} vs expected {unit}"
        ours = ours / factor
    assert abs(ours - expected) <= abs(expected) * Decimal("0.001"), f"{vid} {obis}: {ours} vs {expected} {unit}"


def _check_time(vid: str, ours: str | None, stated: str) -> None:
    m = re.match(r"(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)", stated)
    assert m, stated
    want = datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}")
    assert ours is not None, f"{vid}: no time decoded, expected {stated}"
    t = datetime.fromisoformat(ours)
    local = t.replace(tzinfo=None, microsecond=0)
    utc = (t - t.utcoffset()).replace(tzinfo=None, microsecond=0) if t.utcoffset() is not None else local
    assert min(abs(local - want), abs(utc - want)) <= timedelta(seconds=1), f"{vid}: {ours} vs {stated}"


GOOD = [v for v in DLMS_VECTORS if not v["expect"].get("error") and (v.get("key") or not v.get("encrypted"))]
BROKEN = [v for v in DLMS_VECTORS if v["expect"].get("error")]
NO_KEY = [v for v in DLMS_VECTORS if v.get("encrypted") and not v.get("key")]


@pytest.mark.parametrize("v", GOOD, ids=lambda v: v["id"])
def test_capture_decodes_to_expected_readings(v: dict[str, Any]) -> None:
    pushes = _pushes(_decode(v))
    assert pushes, f"{v['id']}: nothing decoded"
    push = pushes[-1]
    readings = _by_obis(push)
    exp = v["expect"]
    lenient_zero = "0 may mean" in (v.get("notes") or "")
    golden = v["id"].startswith("ams-")
    for obis, want in exp.get("readings", {}).items():
        reading = readings.get(obis) or (_same_code_other_channel(push, obis) if golden else None)
        if reading is None and lenient_zero and want.get("value") in (0, 0.0):
            continue  # golden master writes 0 for values this list does not carry
        if reading is None and want.get("label") and isinstance(want["value"], str):
            # the source names no OBIS code for this element (placeholder code)
            assert any(r.value == want["value"] for r in push.readings), f"{v['id']}: {want}"
            continue
        assert reading is not None, f"{v['id']}: {obis} missing; have {sorted(readings)}"
        _check_value(v["id"], obis, reading, want)
    if exp.get("meter_id"):
        texts = {r.value for r in push.readings if isinstance(r.value, str)}
        assert exp["meter_id"] == push.meter_id or exp["meter_id"] in texts
    if exp.get("count") is not None:
        assert sum(1 for r in push.readings if r.is_number) == exp["count"]
    if exp.get("time"):
        _check_time(v["id"], push.time, exp["time"])
    assert push.encrypted == bool(v.get("encrypted"))
    assert push.authenticated == bool(v.get("encrypted") and v.get("auth_key"))


@pytest.mark.parametrize("how", ["bytes", "garbage"])
@pytest.mark.parametrize("v", GOOD, ids=lambda v: v["id"])
def test_capture_fed_byte_by_byte_and_in_garbage_gives_the_same_push(v: dict[str, Any], how: str) -> None:
    if v["transport"] == "apdu":
        pytest.skip("a bare APDU has no link layer to split or resynchronise")
    whole = _pushes(_decode(v))
    other = _pushes(_decode(v, how))
    assert other and other[-1] == whole[-1]


@pytest.mark.parametrize("v", BROKEN, ids=lambda v: v["id"])
def test_broken_capture_is_rejected_with_its_kind(v: dict[str, Any]) -> None:
    out = _decode(v)
    assert not _pushes(out)
    kinds = {o.kind for o in out if isinstance(o, MeterpipeError)}
    assert v["expect"]["error"] in kinds


@pytest.mark.parametrize("v", NO_KEY, ids=lambda v: v["id"])
def test_encrypted_capture_without_key_says_so(v: dict[str, Any]) -> None:
    out = _decode(v)
    errors = [o for o in out if isinstance(o, MeterpipeError)]
    assert not _pushes(out) and errors
    assert errors[-1].kind == "decrypt" and "no encryption key" in str(errors[-1])
