"""Issue 11: the meter probe behind "Test this meter" (decoder/probe.py, sans-IO).

Real bytes only: simulated meters with known keys (tests may hold what the project
generates) and the shared corpus's captures (read from ../shared/corpus). Every
report that saw a key is searched for it and for the wrong key tried: hex in both
cases, raw, repr and base64.
"""

from __future__ import annotations

import base64
import json
import random
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterpipe.common.config import MeterConfig
from meterpipe.common.link.crc import crc16_arc
from meterpipe.common.schema import LinkLayer
from meterpipe.decoder.probe import ADVICE, MAX_ERROR_ENTRIES, Probe, ProbeReport, open_failed
from meterpipe.simulator.meter import MeterSimulator
from tests.conftest import keys, model_hint, needs_corpus, vector
from tests.decoder.strategies import DERANDOMIZE, examples

KEY = bytes.fromhex("5a1f0c93d2e847b6a0c4e1f27b39d815")
AUTH = bytes.fromhex("c3b9a07e41d25f68e9a0b7c1d4f3e226")
WRONG = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
T0 = datetime(2026, 3, 1, 12, 0, 0)
FIELDS = {"port", "seconds", "opened", "open_error", "bytes", "frames", "checksum_errors", "pushes",
          "encrypted", "decrypted", "readings", "errors", "verdict"}


def advised(error: dict[str, object], kind: str) -> bool:
    """The kind's advice is given: in the row, or already in the decoder's message (then not twice)."""
    head = ADVICE[kind].split(":", 1)[0]
    return error["advice"] == ADVICE[kind] or (error["advice"] == "" and head in str(error["message"]))


def meter(key: bytes | None = None, auth_key: bytes | None = None, *, link: LinkLayer = LinkLayer.AUTO,
          model: str | None = "e450") -> MeterConfig:
    return MeterConfig(name="house", port="/dev/ttyPROBE", link=link, key=key, auth_key=auth_key, model=model)


def stream(count: int = 2, *, key: bytes | None = KEY, auth_key: bytes | None = AUTH, model: str = "e450") -> bytes:
    sim = MeterSimulator(model, key=key, auth_key=auth_key, seed=11)
    return b"".join(sim.push(T0 + timedelta(seconds=10 * i)).data for i in range(count))


def probe(config: MeterConfig, *chunks: bytes, step_ns: int = 0) -> ProbeReport:
    """Feed the chunks ``step_ns`` apart (0: all at once; over 3 s apart a push's frames are abandoned)."""
    p = Probe(config)
    for i, chunk in enumerate(chunks):
        p.feed(chunk, 1_000_000_000 + step_ns * i)
    return p.report(2.0)


def key_forms(*secrets: bytes) -> set[bytes]:
    """Every way a 16-byte key could show up in a report (half a key counts too)."""
    forms: set[bytes] = set()
    for key in secrets:
        low, up = key.hex(), key.hex().upper()
        texts = {low, up, low[:16], low[16:], up[:16], up[16:], repr(key), base64.b64encode(key).decode(),
                 " ".join(f"{b:02x}" for b in key), " ".join(f"{b:02X}" for b in key)}
        forms |= {t.encode() for t in texts} | {key}
    return forms


def assert_no_secret(report: ProbeReport, *secrets: bytes) -> None:
    text = json.dumps(report.as_json())
    for where in (text.encode(), text.encode().decode("unicode_escape").encode("latin-1", "replace"),
                  repr(report).encode()):
        leaked = [f for f in key_forms(*secrets) if f in where]
        assert not leaked, f"a key shows in the report: {len(leaked)} forms"


# --- the right keys ---------------------------------------------------------------------


def test_encrypted_pushes_with_the_right_keys_decode() -> None:
    sim = MeterSimulator("e450", key=KEY, auth_key=AUTH, seed=11)
    pushes = [sim.push(T0 + timedelta(seconds=10 * i)) for i in range(3)]
    report = probe(meter(KEY, AUTH), *(p.data for p in pushes), step_ns=10_000_000_000)
    assert set(report.as_json()) == FIELDS
    assert (report.opened, report.open_error, report.pushes, report.encrypted, report.decrypted) == (
        True, None, 3, True, True)
    assert report.frames == sum(len(p.frames) for p in pushes) and report.bytes == sum(len(p.data) for p in pushes)
    assert report.checksum_errors == 0 and report.errors == []
    assert report.verdict == "OK: 3 pushes decoded and decrypted"
    assert all(set(r) == {"name", "obis", "value", "unit"} for r in report.readings)
    got = {r["obis"]: r for r in report.readings}
    value, exponent, unit = pushes[-1].values["1-1:1.8.0"]  # the last push's readings
    assert got["1-1:1.8.0"]["value"] == value * 10**exponent and got["1-1:1.8.0"]["unit"] == unit == "Wh"
    assert got["1-1:1.8.0"]["name"] == "active_energy_import"
    assert json.loads(json.dumps(report.as_json())) == report.as_json()
    assert_no_secret(report, KEY, AUTH)


def _garbage(seed: int) -> bytes:
    rng = random.Random(seed)
    return bytes(rng.choice(b"\x00\x7e\x68\xa0\xff\x16\x13") for _ in range(60))


@pytest.mark.parametrize("how", ["whole", "bytes", "garbage"])
def test_the_report_does_not_depend_on_how_the_bytes_arrive(how: str) -> None:
    data = stream(2)
    whole = probe(meter(KEY, AUTH), data)
    if how == "bytes":
        report = probe(meter(KEY, AUTH), *(data[i : i + 1] for i in range(len(data))))
    elif how == "garbage":
        report = probe(meter(KEY, AUTH), _garbage(1) + data[:300], data[300:] + _garbage(2))
    else:
        report = whole
    assert (report.pushes, report.frames, report.decrypted, report.readings) == (
        whole.pushes, whole.frames, True, whole.readings)
    assert report.verdict.startswith("OK: 2 pushes decoded")


def test_done_once_a_push_is_decoded() -> None:
    sim = MeterSimulator("e450", key=KEY, auth_key=AUTH, seed=11)
    frames = sim.push(T0).frames
    p = Probe(meter(KEY, AUTH))
    for frame in frames[:-1]:
        p.feed(frame, 0)
        assert not p.done
    partial = p.report(1.0)
    assert partial.frames == len(frames) - 1 and partial.pushes == 0 and partial.encrypted is None
    assert partial.verdict.startswith(f"{len(frames) - 1} frames arrived but no complete push yet")
    p.feed(frames[-1], 0)
    assert p.done and p.report(1.0).pushes == 1


def test_plain_pushes_are_not_encrypted() -> None:
    report = probe(meter(), stream(1, key=None, auth_key=None))
    assert (report.pushes, report.encrypted, report.decrypted) == (1, False, None)
    assert report.verdict == "OK: 1 push decoded" and report.readings


def test_a_key_set_for_a_plain_meter_does_no_harm() -> None:
    report = probe(meter(KEY), stream(1, key=None, auth_key=None))
    assert (report.pushes, report.encrypted, report.decrypted) == (1, False, None)


# --- wrong or missing keys ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "auth_key", "sent_auth", "kind", "verdict"),
    [
        (WRONG, AUTH, AUTH, "auth", "frames arrive but fail authentication: wrong key or authentication key"),
        (KEY, WRONG, AUTH, "auth", "frames arrive but fail authentication: wrong key or authentication key"),
        (WRONG, None, AUTH, "decrypt", "frames arrive but do not decrypt: wrong key?"),
        (WRONG, None, None, "decrypt", "frames arrive but do not decrypt: wrong key?"),
    ],
    ids=["wrong-key", "wrong-auth-key", "wrong-key-no-auth", "wrong-key-unauthenticated-meter"],
)
def test_wrong_keys_come_out_as_errors_with_advice(
    key: bytes, auth_key: bytes | None, sent_auth: bytes | None, kind: str, verdict: str
) -> None:
    report = probe(meter(key, auth_key), stream(2, auth_key=sent_auth))
    assert (report.pushes, report.encrypted, report.decrypted, report.readings) == (0, True, False, [])
    assert report.frames > 0 and report.checksum_errors == 0
    assert [(e["kind"], e["count"]) for e in report.errors] == [(kind, 2)]
    (error,) = report.errors
    assert advised(error, kind) and "key" in str(error["advice"]) + str(error["message"])
    assert "key" in str(error["message"])
    assert report.verdict.startswith(verdict)
    assert_no_secret(report, KEY, AUTH, WRONG)


def test_an_encrypted_meter_without_a_key_says_to_enter_one() -> None:
    report = probe(meter(None, None), stream(1))
    assert (report.pushes, report.encrypted, report.decrypted) == (0, True, False)
    assert [e["kind"] for e in report.errors] == ["decrypt"]
    assert report.verdict == "frames arrive encrypted but no key is set: enter the meter's encryption key (key)"
    assert_no_secret(report, KEY, AUTH)


# --- nothing, garbage, damage ------------------------------------------------------------


def test_no_bytes() -> None:
    report = Probe(meter()).report(15.0)
    assert (report.bytes, report.frames, report.pushes, report.encrypted, report.decrypted) == (0, 0, 0, None, None)
    assert report.verdict.startswith("no bytes arrived in 15 s: check the cable, the port and the baud rate")


def test_garbage_holds_no_frames() -> None:
    rng = random.Random(7)
    report = probe(meter(KEY, AUTH), bytes(rng.randrange(256) for _ in range(5000)))
    assert report.bytes == 5000 and report.pushes == 0 and report.frames == 0
    assert report.verdict.startswith("bytes arrive but") and "baud rate" in report.verdict


def test_damaged_frames_are_checksum_errors() -> None:
    sim = MeterSimulator("e450", key=KEY, auth_key=AUTH, seed=11)
    frames = [f for i in range(2) for f in sim.push(T0 + timedelta(seconds=10 * i)).frames]
    damaged = [f[:-3] + bytes([f[-3] ^ 0xFF]) + f[-2:] for f in frames]  # the FCS, flipped
    report = probe(meter(KEY, AUTH), b"".join(damaged))
    assert report.frames == 0 and report.checksum_errors == len(frames) and report.pushes == 0
    assert [(e["kind"], e["count"], e["advice"]) for e in report.errors] == [("checksum", len(frames), ADVICE["checksum"])]
    assert report.verdict.startswith("bytes arrive but every frame fails its checksum: check the baud rate and parity")


def test_some_frames_damaged_still_decodes_the_rest() -> None:
    sim = MeterSimulator("e450", key=KEY, auth_key=AUTH, seed=11)
    first, second = sim.push(T0).frames, sim.push(T0 + timedelta(seconds=10)).frames
    bad = first[1][:-3] + bytes([first[1][-3] ^ 1]) + first[1][-2:]
    report = probe(meter(KEY, AUTH), b"".join([first[0], bad, *first[2:], *second]))
    assert report.pushes == 1 and report.checksum_errors == 1 and report.verdict.startswith("OK: 1 push")


def test_errors_stay_a_short_list() -> None:
    p = Probe(meter())
    for i in range(3 * MAX_ERROR_ENTRIES):
        p.lost(f"reason {i}")
    report = p.report(1.0)
    assert len(report.errors) == MAX_ERROR_ENTRIES
    assert sum(int(str(e["count"])) for e in report.errors) == 3 * MAX_ERROR_ENTRIES


def test_a_lost_port_is_reported() -> None:
    p = Probe(meter())
    p.lost("read failed: device reports readiness\nto read but returned no data")
    report = p.report(3.0)
    assert report.errors[0]["kind"] == "port" and "\n" not in str(report.errors[0]["message"])
    assert "(the port was lost: read failed" in report.verdict


def test_open_failed_report() -> None:
    report = open_failed(meter(), "cannot open /dev/ttyPROBE: no such device\n(errno 2)", 0.04)
    assert (report.opened, report.bytes, report.encrypted, report.seconds) == (False, 0, None, 0.0)
    assert report.open_error == "cannot open /dev/ttyPROBE: no such device (errno 2)"
    assert report.verdict == report.open_error
    assert set(report.as_json()) == FIELDS


# --- the link layer setting ------------------------------------------------------------


def _telegram(body: str) -> bytes:
    head = ("/ISK5\\2M550T-1012\r\n\r\n" + body + "!").encode("ascii")
    return head + f"{crc16_arc(head):04X}\r\n".encode()


def test_p1_telegrams_through_the_dsmr_link_and_the_wrong_link_setting() -> None:
    data = _telegram("1-0:1.8.1(002130.115*kWh)\r\n1-0:1.7.0(00.432*kW)\r\n")
    report = probe(meter(link=LinkLayer.DSMR, model=None), data)
    assert report.pushes == 1 and report.frames == 1 and report.encrypted is False
    assert {r["obis"]: r["value"] for r in report.readings}["1-0:1.8.1"] == 2130.115
    wrong = probe(meter(link=LinkLayer.AUTO, model=None), data)
    assert wrong.frames == 0
    assert wrong.verdict == "bytes arrive but no auto frames: they look like dsmr frames; set the link layer to dsmr"


def test_a_p1_telegram_with_a_bad_crc_is_a_checksum_error() -> None:
    data = bytearray(_telegram("1-0:1.8.1(002130.115*kWh)\r\n"))
    data[25] ^= 0x01  # a digit of the reading
    report = probe(meter(link=LinkLayer.DSMR, model=None), bytes(data))
    assert (report.frames, report.checksum_errors, report.pushes) == (1, 1, 0)
    assert report.verdict.startswith("frames arrive but most fail their checksum")


def test_hdlc_bytes_on_a_dsmr_or_mbus_setting_name_the_link_they_hold() -> None:
    data = stream(1)
    for link in (LinkLayer.DSMR, LinkLayer.MBUS):
        report = probe(meter(KEY, AUTH, link=link), data)
        assert report.frames == 0 and report.verdict.endswith("they look like hdlc frames; set the link layer to hdlc")


# --- real captures --------------------------------------------------------------------


@needs_corpus
@pytest.mark.corpus
@pytest.mark.parametrize(
    ("vid", "link", "wrong_kind"),
    [("dlmsp-lg-e450-enc-gbt-1", LinkLayer.HDLC, "auth"),
     ("dlmsp-kaifa-ma309-at-netznoe-mbus-enc", LinkLayer.MBUS, "decrypt")],
)
def test_real_encrypted_captures_with_right_and_wrong_keys(vid: str, link: LinkLayer, wrong_kind: str) -> None:
    v: dict[str, Any] = vector(vid)
    key, auth = keys(v)
    assert key is not None
    data = bytes.fromhex(v["bytes_hex"])
    config = MeterConfig(name="corpus", port="/dev/ttyPROBE", link=link, key=key, auth_key=auth, model=model_hint(v))
    report = probe(config, data)
    assert (report.pushes, report.encrypted, report.decrypted) == (1, True, True), report.verdict
    assert set(v["expect"]["readings"]) <= {str(r["obis"]) for r in report.readings}
    assert_no_secret(report, key, *(k for k in (auth,) if k))
    wrong = probe(MeterConfig(name="corpus", port="/dev/ttyPROBE", link=link, key=WRONG, auth_key=auth,
                              model=model_hint(v)), data)
    assert (wrong.pushes, wrong.decrypted) == (0, False)
    assert [e["kind"] for e in wrong.errors] == [wrong_kind] and advised(wrong.errors[0], wrong_kind)
    assert "wrong key" in wrong.verdict
    assert_no_secret(wrong, key, WRONG, *(k for k in (auth,) if k))


@needs_corpus
@pytest.mark.corpus
def test_a_real_p1_telegram() -> None:
    v = vector("dsmrp-fluvius-be-v171")
    report = probe(meter(link=LinkLayer.DSMR, model=None), v["telegram"].encode("ascii"))
    assert report.pushes == 1 and report.checksum_errors == 0 and report.verdict == "OK: 1 push decoded"


# --- any input ------------------------------------------------------------------------


@settings(max_examples=examples(60), derandomize=DERANDOMIZE, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=1200), max_size=12),
       junk=st.binary(max_size=200), where=st.integers(min_value=0, max_value=1200))
def test_any_split_and_junk_give_the_same_pushes_and_a_json_report(cuts: list[int], junk: bytes, where: int) -> None:
    data = stream(2)
    where = min(where, len(data))
    mangled = data[:where] + junk + data[where:]
    bounds = sorted({0, len(mangled), *(min(c, len(mangled)) for c in cuts)})
    chunks = [mangled[a:b] for a, b in pairwise(bounds)]
    whole, split = probe(meter(KEY, AUTH), mangled), probe(meter(KEY, AUTH), *chunks)
    assert split.as_json() == whole.as_json()
    assert whole.pushes >= 1  # junk breaks at most the push it lands in
    json.dumps(whole.as_json())
