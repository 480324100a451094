"""reader.encoding and the model layouts, checked against real captures byte for byte."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest

from meterpipe.common.errors import ChecksumError
from meterpipe.common.link import build as link_build
from meterpipe.common.link.crc import mbus_checksum
from meterpipe.common.link.frames import NEED_DATA, Framer, LinkFrame, parse_hdlc, parse_mbus
from meterpipe.decoder.security import decrypt, encrypt, parse_ciphered
from meterpipe.simulator import encoding as enc
from meterpipe.simulator.meter import encode_frames, encode_notification
from meterpipe.simulator.models import MODELS
from tests.conftest import needs_corpus, vector

# --- A-XDR and APDUs ------------------------------------------------------------


def test_integers_encode_big_endian_with_their_tag() -> None:
    assert enc.u16(236) == bytes.fromhex("1200ec")
    assert enc.u32(482939) == bytes.fromhex("0600075e7b")
    assert enc.i8(-3) == bytes.fromhex("0ffd")
    assert enc.u64(862055) == bytes.fromhex("1500000000000d2767")
    assert enc.integer(0x10, 1000) == bytes.fromhex("1003e8")
    with pytest.raises(ValueError):
        enc.u16(70000)
    with pytest.raises(ValueError):
        enc.u32(-1)
    with pytest.raises(ValueError):
        enc.integer(0x09, 1)


def test_strings_structures_and_long_lengths() -> None:
    assert enc.visible_string("Kamstrup_V0001") == b"\x0a\x0eKamstrup_V0001"
    assert enc.octet_string(b"\x01" * 200)[:3] == b"\x09\x81\xc8"
    assert enc.structure([enc.u8(1), enc.u8(2)]) == bytes.fromhex("02021101 1102".replace(" ", ""))
    assert enc.array([]) == b"\x01\x00"


def test_obis_codes() -> None:
    assert enc.obis_bytes("1-0:1.8.0") == bytes.fromhex("0100010800ff")
    assert enc.obis_bytes("0-0:42.0.0") == bytes.fromhex("00002a0000ff")
    assert enc.obis_bytes("1-1:0.2.129*7") == bytes.fromhex("0101000281 07".replace(" ", ""))
    for bad in ("1-0:1.8", "1-0:256.8.0", "x", "1-0:1.8.0*300"):
        with pytest.raises(ValueError):
            enc.obis_bytes(bad)


def test_cosem_datetime_matches_a_real_e360_stamp() -> None:
    cest = timezone(timedelta(hours=2), "CEST")
    when = datetime(2023, 6, 6, 17, 31, 20, tzinfo=cest)
    # utcoffset +2h -> deviation -120 (0xFF88); this fixed zone has no DST: status 0
    assert enc.cosem_datetime(when, deviation=None, hundredths=0x12) == bytes.fromhex("07e7060602111f1412ff8800")
    assert enc.cosem_datetime(when, deviation=None, status=0x80, hundredths=0x12) == bytes.fromhex(
        "07e7060602111f1412ff8880"
    )
    try:
        zurich = ZoneInfo("Europe/Zurich")
    except ZoneInfoNotFoundError:
        pytest.skip("no time zone database on this machine")
    summer = datetime(2023, 6, 6, 17, 31, 20, tzinfo=zurich)  # CEST: DST flag set
    assert enc.cosem_datetime(summer, deviation=None, hundredths=0x12) == bytes.fromhex("07e7060602111f1412ff8880")
    winter = datetime(2024, 1, 15, 8, 0, 0, tzinfo=zurich)
    assert enc.cosem_datetime(winter, deviation=None)[9:] == bytes.fromhex("ffc400")
    naive = datetime(2026, 5, 4, 11, 39, 20)
    assert enc.cosem_datetime(naive) == bytes.fromhex("07ea0504010b2714ff800000")
    assert enc.cosem_datetime(naive, deviation=None) == bytes.fromhex("07ea0504010b2714ff800000")


def test_data_notification_header() -> None:
    stamp = bytes(12)
    apdu = enc.data_notification(0xD7DD82, stamp, b"\x11\x05")
    assert apdu == bytes.fromhex("0f00d7dd820c") + stamp + b"\x11\x05"
    assert enc.data_notification(1, None, b"\x00") == bytes.fromhex("0f000000010000")
    with pytest.raises(ValueError):
        enc.data_notification(1, b"\x00", b"\x00")


def test_gbt_blocks_number_from_one_and_mark_the_last() -> None:
    blocks = enc.gbt_blocks(bytes(range(250)), [100])
    assert [b[:7].hex() for b in blocks] == ["e04000010000" + "64", "e04000020000" + "64", "e0c000030000" + "32"]
    assert b"".join(b[7:] for b in blocks) == bytes(range(250))
    one = enc.gbt_blocks(b"\x0f\x00", [100])
    assert one == [bytes.fromhex("e0c0000100000 2 0f00".replace(" ", ""))]
    with pytest.raises(ValueError):
        enc.gbt_blocks(b"x", [0])


# --- link layers ------------------------------------------------------------------


def test_hdlc_frame_parses_and_checks() -> None:
    raw = link_build.hdlc_frame(link_build.LLC_HEADER + b"\x0f\x01", destination=b"\xce\xff", source=b"\x03")
    frame = parse_hdlc(raw)
    assert raw[:3] == bytes.fromhex("7ea00f") and raw[3:6] == bytes.fromhex("ceff03")
    assert frame.payload == b"\x0f\x01" and frame.first and not frame.more
    broken = raw[:-3] + bytes([raw[-3] ^ 1]) + raw[-2:]
    with pytest.raises(ChecksumError):
        parse_hdlc(broken)
    for dest in (b"\xce", b"", b"\x03\x03"):
        with pytest.raises(ValueError):
            link_build.hdlc_frame(b"x", destination=dest, source=b"\x03")
    with pytest.raises(ValueError):
        link_build.hdlc_frame(bytes(3000), destination=b"\xcf", source=b"\x03")


def _frames(data: bytes) -> list[LinkFrame]:
    framer = Framer()
    framer.feed(data)
    out = []
    while (f := framer.next_frame()) is not NEED_DATA:
        assert isinstance(f, LinkFrame)
        out.append(f)
    assert framer.buffered <= 1  # at most the shared closing flag
    return out


def test_hdlc_segments_set_the_segmentation_bit_on_all_but_the_last() -> None:
    apdu = bytes(range(256)) * 2
    raws = link_build.hdlc_segments(apdu, destination=b"\xcf", source=b"\x02\x23", max_info=154, segment_control=0x03)
    frames = _frames(b"".join(raws))
    assert [f.raw[1] for f in frames] == [0xA8, 0xA8, 0xA8, 0xA0]
    assert [f.more for f in frames] == [True, True, True, False]
    assert [f.first for f in frames] == [True, False, False, False]
    assert [f.raw[6] for f in frames] == [0x03, 0x03, 0x03, 0x13]
    assert b"".join(f.payload for f in frames) == apdu


def test_mbus_frames_carry_the_dlms_transport_header() -> None:
    apdu = bytes(300)
    raws = link_build.mbus_frames(apdu)
    assert [len(r) for r in raws] == [256, 6 + 5 + 55]
    first, last = parse_mbus(raws[0]), parse_mbus(raws[1])
    assert raws[0][:9] == bytes.fromhex("68fafa6853ff000167")
    assert raws[1][6] == 0x11 and raws[1][-2] == mbus_checksum(raws[1][4:-2])
    assert first.more and first.first and not last.more and not last.first
    assert first.payload + last.payload == apdu


# --- the real captures, rebuilt -----------------------------------------------------


def _apdu_of(v: dict[str, Any]) -> tuple[bytes, list[int]]:
    """The APDU a capture carries (GBT blocks joined) and its GBT block sizes."""
    data = b"".join(parse_hdlc(bytes.fromhex(f)).payload for f in v["frames_hex"])
    if data[0] != 0xE0:
        return data, []
    out, sizes, pos = b"", [], 0
    while pos < len(data):
        size = data[pos + 6]
        out += data[pos + 7 : pos + 7 + size]
        sizes.append(size)
        pos += 7 + size
    return out, sizes


def _frames_hex(v: dict[str, Any]) -> list[bytes]:
    return [bytes.fromhex(f) for f in v["frames_hex"]]


@needs_corpus
@pytest.mark.corpus
def test_e450_gbt_frames_rebuilt_exactly() -> None:
    v = vector("sdc-lg-e450-ch-unenc-vse2026")
    apdu, sizes = _apdu_of(v)
    assert enc.hdlc_gbt_frames(apdu, destination=b"\xce\xff", source=b"\x03", block_sizes=sizes) == _frames_hex(v)


@needs_corpus
@pytest.mark.corpus
def test_e450_encrypted_push_rebuilt_exactly_with_the_model_block_sizes() -> None:
    v = vector("dlmsp-lg-e450-enc-gbt-1")
    ciphered, _ = _apdu_of(v)
    c = parse_ciphered(ciphered)
    key, auth = bytes.fromhex(v["key"]), bytes.fromhex(v["auth_key"])
    plain, verified = decrypt(c, key, auth)
    assert verified
    again = encrypt(plain, system_title=c.system_title, invocation_counter=c.invocation_counter, key=key, auth_key=auth)
    assert again == ciphered
    assert encode_frames(MODELS["e450"], ciphered) == _frames_hex(v)


@needs_corpus
@pytest.mark.corpus
def test_e570_encrypted_gbt_block_size() -> None:
    v = vector("sdc-lg-e570-ch-enc-gbt")
    ciphered, sizes = _apdu_of(v)
    assert sizes[:-1] == [116] * (len(sizes) - 1)
    rebuilt = enc.hdlc_gbt_frames(ciphered, destination=b"\xce\x9b", source=b"\x03", block_sizes=[116])
    assert rebuilt == _frames_hex(v)


@needs_corpus
@pytest.mark.corpus
def test_am550_segmentation_rebuilt_exactly() -> None:
    v = vector("sdc-iskra-am550-ch-unenc-vse2026-hdlcseg")
    apdu, _ = _apdu_of(v)
    assert encode_frames(MODELS["am550"], apdu) == _frames_hex(v)
    assert link_build.hdlc_segments(apdu, destination=b"\xcf", source=b"\x02\x23", max_info=154, segment_control=3) == (
        _frames_hex(v)
    )


@needs_corpus
@pytest.mark.corpus
def test_e360_and_omnipower_single_frames_rebuilt_exactly() -> None:
    for vid, model in (("sdc-lg-e360-ch-unenc-vse2026", "e360"), ("dlmsp-kamstrup-omnipower-enc", "omnipower")):
        v = vector(vid)
        apdu, _ = _apdu_of(v)
        assert encode_frames(MODELS[model], apdu) == _frames_hex(v), vid


# The plaintext layouts: the model's notification with the capture's values is the capture.
_LAYOUTS: list[tuple[str, str, dict[str, str], dict[str, int], str | None]] = [
    (
        "sdc-lg-e450-ch-unenc-vse2026",
        "e450",
        {"meter_id": "LGZ1030653520967", "serial": "1909113"},
        dict(ai=482939, ae=0, ri=37, re=344697, pi=28, pe=0, v1=236, v2=236, v3=0, i1=9, i2=8, i3=0),
        "07ea0504010b2715ff800081",
    ),
    (
        "sdc-lg-e570-ch-unenc-vse2026",
        "e570",
        {"meter_id": "LGZ1030781910790"},
        dict(ai=0, ae=0, ri=0, re=0, pi=0, pe=0, v1=232, v2=0, v3=0, i1=0, i2=0, i3=0),
        None,
    ),
    (
        "sdc-lg-e360-ch-unenc-vse2026",
        "e360",
        {"meter_id": "LGZ1030163598905"},
        dict(ai=21956, ae=4547, ri=27256, re=4432, pi=11, pe=0, v1=2357, v2=0, v3=0, i1=6, i2=0, i3=0),
        None,
    ),
    (
        "sdc-iskra-am550-ch-unenc-vse2026-hdlcseg",
        "am550",
        {"meter_id": "ISK1030783821282"},
        dict(ai=15207, ae=8987, ri=12784, re=5654, pi=27, pe=0, v1=2347, v2=0, v3=0, i1=12, i2=0, i3=0),
        None,
    ),
    (
        "ams-kamstrup-no-em001-1",
        "omnipower",
        {"meter_id": "5706567202753025", "meter_type": "6841131BN243101040"},
        dict(
            pi=1247, pe=0, qi=0, qe=417, i1=189, i2=327, i3=128, v1=236, v2=236, v3=236,
            ai=8582328, ae=454083, ri=15327, re=1477438,
        ),
        None,
    ),
]


@needs_corpus
@pytest.mark.corpus
@pytest.mark.parametrize(("vid", "model", "texts", "registers", "object_clock"), _LAYOUTS, ids=[x[1] for x in _LAYOUTS])
def test_model_layout_reproduces_the_real_notification(
    vid: str, model: str, texts: dict[str, str], registers: dict[str, int], object_clock: str | None
) -> None:
    real, _ = _apdu_of(vector(vid))
    apdu = encode_notification(
        MODELS[model],
        invoke_id=int.from_bytes(real[1:5], "big"),
        clock=real[6:18],
        texts=texts,
        registers=registers,
        object_clock=bytes.fromhex(object_clock) if object_clock else None,
    )
    assert apdu.hex() == real.hex()
