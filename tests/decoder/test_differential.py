"""The fast A-XDR parser (decoder.axdr) against gurux-dlms (decoder.gurux_adapter).

Both parse every corpus push body (decrypted and reassembled by the decoder's own
layers) and Hypothesis-generated bodies to *identical* values. The only
normalisations are the gurux differences measured with gurux-dlms 1.0.203:

* date-time (0x19): gurux rebuilds the 12 bytes from its own datetime object and
  loses fields it cannot hold, so date-times are compared as apdu.cosem_datetime
  text;
* date (0x1A): gurux drops the day of week (writes 0xFF); time (0x1B): gurux drops
  the hundredths (writes 0x00 unless they were 0xFF). Compared without those fields;
* utf8-string (0x0C) is returned by gurux as hex text: excluded from generation;
* visible-string: gurux returns hex text when the string holds a byte outside
  0x20..0x7F, so generated visible strings are printable ASCII (what meters send).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from meterpipe.common.errors import MeterpipeError
from meterpipe.decoder import axdr, gurux_adapter
from meterpipe.decoder.apdu import parse_notification
from meterpipe.decoder.mapping import map_body
from tests.conftest import DLMS_VECTORS, keys, needs_corpus
from tests.decoder import strategies as s

DIFF_SETTINGS = settings(
    max_examples=s.examples(300), deadline=2000, derandomize=s.DERANDOMIZE, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


DECODABLE = [
    v for v in DLMS_VECTORS if not v["expect"].get("error") and (v.get("key") or not v.get("encrypted"))
]


@needs_corpus
@pytest.mark.corpus
@pytest.mark.parametrize("v", DECODABLE, ids=lambda v: v["id"])
def test_corpus_body_decodes_identically_with_gurux(v: dict[str, Any]) -> None:
    plain = s.plaintexts(v, *keys(v))
    assert plain, f"{v['id']}: no push reassembled"
    for apdu in plain:
        offset = s.notification_body_offset(apdu)
        ours = axdr.parse_all(apdu, offset)
        theirs = gurux_adapter.parse_all(apdu[offset:])
        assert s.normal(ours) == s.normal(theirs)
        # and the fast path is the one the decoder used
        assert not parse_notification(apdu).via_gurux


@needs_corpus
@pytest.mark.corpus
def test_corpus_covers_encrypted_segmented_and_gbt_pushes() -> None:
    """The differential corpus run really includes the hard paths (not only plaintext)."""
    ids = {v["id"] for v in DECODABLE}
    for needed in (
        "dlmsp-kamstrup-omnipower-enc",  # GCM with auth key
        "sdc-lg-e450-ch-enc-gbt-nopushlist",  # encrypted, no auth key
        "sdc-iskra-am550-ch-unenc-hdlcseg",  # HDLC segmentation
        "dlmsp-lg-e450-enc-gbt-1",  # GBT + GCM
        "dlmsp-kaifa-ma309-at-netznoe-mbus-enc",  # M-Bus transport
    ):
        if needed in {v["id"] for v in DLMS_VECTORS}:
            assert needed in ids


@DIFF_SETTINGS
@given(s.BODIES)
def test_generated_body_decodes_identically_with_gurux_and_as_encoded(body: s.Enc) -> None:
    ours = axdr.parse_all(body.raw)
    assert s.normal(ours) == s.normal(body.value)  # the independent encoder is the oracle
    assert s.normal(gurux_adapter.parse_all(body.raw)) == s.normal(ours)


@settings(max_examples=s.examples(150), deadline=2000, derandomize=s.DERANDOMIZE, suppress_health_check=[HealthCheck.too_slow])
@given(s.notification())
def test_generated_notification_decodes_identically_with_gurux(n: tuple[bytes, int, s.Enc]) -> None:
    apdu, offset, body = n
    note = parse_notification(apdu)
    assert not note.via_gurux
    assert s.normal(note.body) == s.normal(body.value)
    assert s.normal(gurux_adapter.parse_all(apdu[offset:])) == s.normal(note.body)


@settings(max_examples=s.examples(100), deadline=2000, derandomize=s.DERANDOMIZE)
@given(s.SHAPES)
def test_realistic_push_shapes_map_to_one_reading_per_value(shaped: s.Shaped) -> None:
    """OBIS-tagged and push-list bodies are recognised, every value becomes a reading."""
    mapped = map_body(axdr.parse_all(shaped.body.raw))
    assert len(mapped.readings) == shaped.readings


def test_utf8_string_is_the_documented_difference() -> None:
    """The one type excluded above, pinned so a gurux upgrade that changes it is noticed."""
    raw = b"\x0c\x02\xc3\xa9"
    assert axdr.parse_all(raw) == "é"
    assert gurux_adapter.parse_all(raw) == "C3 A9"


@pytest.mark.parametrize(
    "raw",
    [
        b"\x01\x02\x11\x01",  # array of two, one member
        b"\x09\x05abc",  # octet-string cut short
        b"\x06\x00\x00",  # double-long-unsigned cut short
        b"\x02\x01\x11\x01\x11\x02",  # trailing byte after the body
    ],
)
def test_both_parsers_reject_the_same_truncations(raw: bytes) -> None:
    with pytest.raises(MeterpipeError):
        axdr.parse_all(raw)
    with pytest.raises(MeterpipeError):
        gurux_adapter.parse_all(raw)
