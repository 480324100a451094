"""The meter simulator: link framing, ciphering, values, determinism, and the CLI on a pty."""

from __future__ import annotations

import itertools
import json
import os
import select
import signal
import subprocess
import sys
import time
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from meterpipe.common.errors import AuthError
from meterpipe.common.link.frames import NEED_DATA, Framer, LinkFrame
from meterpipe.decoder import axdr
from meterpipe.decoder.security import decrypt, parse_ciphered
from meterpipe.simulator.encoding import obis_bytes
from meterpipe.simulator.main import read_capture
from meterpipe.simulator.meter import MeterSimulator, SimulatedPush
from meterpipe.simulator.models import MODELS
from meterpipe.simulator.sinks import PtySink

KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
AUTH = bytes.fromhex("d0d1d2d3d4d5d6d7d8d9dadbdcdddedf")
CEST = timezone(timedelta(hours=2))
T0 = datetime(2026, 5, 4, 7, 30, 0, tzinfo=CEST)
ALL_MODELS = sorted(MODELS)
KEYINGS = {"plain": (None, None), "enc+auth": (KEY, AUTH), "enc": (KEY, None)}


def frames_of(data: bytes) -> list[LinkFrame]:
    framer = Framer()
    framer.feed(data)
    out = []
    while (f := framer.next_frame()) is not NEED_DATA:
        assert isinstance(f, LinkFrame)  # parse_hdlc checked HCS and FCS
        out.append(f)
    assert framer.buffered <= 1
    return out


def apdu_of(push: SimulatedPush, model: str) -> bytes:
    """The APDU of a push, checking the link layer the model uses on the way."""
    frames = frames_of(push.data)
    assert [f.raw for f in frames] == list(push.frames)
    assert [f.first for f in frames] == [True] + [False] * (len(frames) - 1)  # LLC only in the first
    link = MODELS[model].link
    if link == "single":
        assert len(frames) == 1 and not frames[0].more
        return frames[0].payload
    if link == "segmented":
        assert [f.raw[1] & 0xF8 for f in frames] == [0xA8] * (len(frames) - 1) + [0xA0]
        assert [f.more for f in frames] == [True] * (len(frames) - 1) + [False]
        return b"".join(f.payload for f in frames)
    assert all(f.raw[1] == 0xA0 and not f.more for f in frames)
    apdu = b""
    for number, f in enumerate(frames, start=1):
        block = f.payload
        last = number == len(frames)
        assert block[0] == 0xE0 and block[1] == (0xC0 if last else 0x40)
        assert int.from_bytes(block[2:4], "big") == number and block[4:6] == b"\x00\x00"
        assert block[6] == len(block) - 7
        apdu += block[7:]
    return apdu


def plaintext(push: SimulatedPush, model: str, key: bytes | None, auth: bytes | None) -> bytes:
    apdu = apdu_of(push, model)
    if key is None:
        assert apdu[0] == 0x0F
        return apdu
    c = parse_ciphered(apdu)
    assert c.invocation_counter == push.invocation_counter
    assert c.security == (0x30 if auth else 0x20)
    plain, verified = decrypt(c, key, auth)
    assert verified == (auth is not None)
    return plain


@pytest.mark.parametrize("keying", sorted(KEYINGS))
@pytest.mark.parametrize("model", ALL_MODELS)
def test_pushes_frame_cipher_and_carry_their_values(model: str, keying: str) -> None:
    key, auth = KEYINGS[keying]
    sim = MeterSimulator(model, key=key, auth_key=auth, seed=3)
    counters = []
    for i in range(3):
        push = sim.push(T0 + timedelta(seconds=5 * i))
        counters.append(push.invocation_counter)
        plain = plaintext(push, model, key, auth)
        body = axdr.parse_all(plain, 18)  # 0F, invoke id, 0C + 12-byte date-time
        spec = MODELS[model]
        if spec.layout == "kamstrup":
            assert body[0] == "Kamstrup_V0001"
            sent = dict(zip((bytes(o) for o in body[1::2]), body[2::2]))
            assert len(sent) == len(spec.fields)
        else:
            definitions = body[0]
            assert [(d[0], d[2]) for d in definitions] == [(f.class_id, f.attribute) for f in spec.fields]
            sent = {bytes(d[1]) + bytes([d[2]]): value for d, value in zip(definitions, body)}
        for f in spec.readings():
            value, exponent, unit = push.values[f.obis]
            assert exponent == f.exponent and unit == f.unit
            name = obis_bytes(f.obis) + (b"" if spec.layout == "kamstrup" else bytes([f.attribute]))
            raw = sent[name]
            assert (raw.decode() if isinstance(raw, bytes) else raw) == value
    if key is None:
        assert counters == [None, None, None]
    else:
        assert counters[1] == counters[0] + 1 and counters[2] == counters[0] + 2  # type: ignore[operator]


def test_meter_clock_in_the_notification() -> None:
    e360 = MeterSimulator("e360").push(datetime(2026, 5, 4, 19, 19, 30, 400_000, tzinfo=CEST))
    stamp = apdu_of(e360, "e360")[6:18]
    assert stamp == bytes.fromhex("07ea05040113131eff ff88 00".replace(" ", ""))
    assert e360.time == datetime(2026, 5, 4, 19, 19, 30, tzinfo=CEST)
    e450 = MeterSimulator("e450").push(datetime(2026, 5, 4, 11, 39, 20, tzinfo=CEST))
    frames = frames_of(e450.data)
    assert frames[0].payload[7 + 6 : 7 + 18] == bytes.fromhex("07ea0504010b2714ff800000")  # no deviation: L+G


def test_wrong_auth_key_is_caught() -> None:
    push = MeterSimulator("e450", key=KEY, auth_key=AUTH).push(T0)
    c = parse_ciphered(apdu_of(push, "e450"))
    with pytest.raises(AuthError):
        decrypt(c, KEY, bytes(16))


def test_logical_device_name_and_system_title() -> None:
    sim = MeterSimulator("e450", key=KEY, auth_key=AUTH, seed=9)
    push = sim.push(T0)
    assert push.meter_id.startswith("LGZ1030") and len(push.meter_id) == 16
    assert push.values["0-0:42.0.0"] == (push.meter_id, 0, None)
    assert parse_ciphered(apdu_of(push, "e450")).system_title[:4] == b"LGZg"
    kam = MeterSimulator("omnipower", seed=9, serial="5706567000000042").push(T0)
    assert kam.meter_id == "5706567000000042" and kam.values["1-1:0.0.5"][0] == kam.meter_id
    assert MeterSimulator("am550").push(T0).meter_id.startswith("ISK")


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="unknown meter model"):
        MeterSimulator("e999")
    with pytest.raises(ValueError, match="16 bytes"):
        MeterSimulator("e450", key=b"short")
    with pytest.raises(ValueError, match="encryption key"):
        MeterSimulator("e450", auth_key=AUTH)
    with pytest.raises(ValueError):
        MeterSimulator("e450", serial="bad\nserial")


def _decimal(value: tuple[int | str, int, str | None]) -> Decimal:
    assert isinstance(value[0], int)
    return Decimal(value[0]).scaleb(value[1])


@pytest.mark.parametrize("model", ALL_MODELS)
def test_energy_registers_only_grow_and_follow_power(model: str) -> None:
    spec = MODELS[model]
    energy_codes = [f.obis for f in spec.readings() if f.quantity in ("ai", "ae", "ri", "re")]
    import_code = next(f.obis for f in spec.readings() if f.quantity == "ai")
    power_code = next(f.obis for f in spec.readings() if f.quantity == "pi")
    sim = MeterSimulator(model, seed=5, start_energy_wh=1_000_000)
    pushes = [sim.push(T0 + timedelta(seconds=60 * i)) for i in range(100)]
    for before, after in itertools.pairwise(pushes):
        for code in energy_codes:
            assert _decimal(after.values[code]) >= _decimal(before.values[code])
    assert _decimal(pushes[0].values[import_code]) == 1_000_000
    # Import energy over 99 minutes matches the trapezoidal integral of import power.
    powers = [_decimal(p.values[power_code]) for p in pushes]
    integral = sum(((a + b) / 2 for a, b in itertools.pairwise(powers)), Decimal(0)) / 60
    gained = _decimal(pushes[-1].values[import_code]) - _decimal(pushes[0].values[import_code])
    step = Decimal(10) ** spec.fields[-1].exponent if spec.layout == "kamstrup" else Decimal(1)
    assert abs(gained - integral) <= 100 * step  # rounding of each step


@pytest.mark.parametrize("model", ALL_MODELS)
def test_a_day_of_plausible_values(model: str) -> None:
    spec = MODELS[model]
    code = {f.quantity: f.obis for f in spec.readings()}
    sim = MeterSimulator(model, seed=11)
    start = datetime(2026, 5, 4, 0, 0, 0)
    powers = []
    for i in range(24 * 6):
        push = sim.push(start + timedelta(minutes=10 * i))
        v = {q: _decimal(push.values[c]) for q, c in code.items() if q not in ("meter_id", "serial", "meter_type")}
        volts = [v["v1"], v["v2"], v["v3"]]
        amps = [v["i1"], v["i2"], v["i3"]]
        assert all(207 <= u <= 253 for u in volts)
        net = v["pi"] - v["pe"]
        apparent = sum(u * a for u, a in zip(volts, amps))
        coarse = spec.name == "e570"  # whole amperes: only the order of magnitude holds
        assert abs(net) <= apparent * Decimal("1.05") + (3 * 253 if coarse else 30)
        assert apparent <= (abs(net) + 3 * 253) * Decimal("1.3") + (3 * 253 if coarse else 0)
        powers.append(net)
    night = sum(powers[12:30]) / 18  # 02:00-05:00
    evening = sum(powers[111:123]) / 12  # 18:30-20:30
    assert 50 < night < 600 and evening > night + 500


def test_deterministic_given_a_seed() -> None:
    def run(seed: int) -> list[bytes]:
        sim = MeterSimulator("e450", key=KEY, auth_key=AUTH, seed=seed)
        return [sim.push(T0 + timedelta(seconds=5 * i)).data for i in range(5)]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_read_capture_accepts_hex_text_and_binary(tmp_path: Path) -> None:
    hexfile = tmp_path / "cap.hex"
    hexfile.write_text("0x7E A0 07\n  cf 03 13\n")
    assert read_capture(hexfile) == bytes.fromhex("7ea007cf0313")
    binfile = tmp_path / "cap.bin"
    binfile.write_bytes(b"\x7e\xa0\x07\xcf\x03\x13")
    assert read_capture(binfile) == b"\x7e\xa0\x07\xcf\x03\x13"
    textish = tmp_path / "cap.txt"
    textish.write_bytes(b"abc")  # odd number of hex digits: raw bytes
    assert read_capture(textish) == b"abc"


# --- round trip through the decoder -----------------------------------------------------


@pytest.mark.parametrize("keying", sorted(KEYINGS))
@pytest.mark.parametrize("model", ALL_MODELS)
def test_decoder_reports_exactly_the_simulated_values(model: str, keying: str) -> None:
    session = pytest.importorskip("meterpipe.decoder.session")
    from meterpipe.common.values import Push

    key, auth = KEYINGS[keying]
    sim = MeterSimulator(model, key=key, auth_key=auth, seed=7)
    decoder = session.MeterDecoder("house", key=key, auth_key=auth, model=model)
    for i in range(3):
        push = sim.push(T0 + timedelta(seconds=5 * i))
        out = decoder.feed(push.data, i)
        assert len(out) == 1 and isinstance(out[0], Push), out
        got = {r.obis: r for r in out[0].readings}
        assert out[0].meter_id == push.meter_id
        assert out[0].authenticated == (auth is not None)
        assert out[0].invocation_counter == push.invocation_counter
        for obis, (value, exponent, unit) in push.values.items():
            r = got.pop(obis)
            if isinstance(value, str):
                assert r.value == value
            else:
                assert isinstance(r.value, int)
                assert Decimal(r.value).scaleb(r.exponent) == Decimal(value).scaleb(exponent), obis
                assert r.unit == unit, obis
        assert all(obis.endswith(":1.0.0") for obis in got), got  # at most the clock besides


# --- the command -----------------------------------------------------------------------


@contextmanager
def _running(*args: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "meterpipe.simulator.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _pty_path(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    assert ready, "simulator printed no pty path"
    line = proc.stdout.readline()
    assert line.startswith("simulated ") and " on /dev/" in line, line
    return line.rsplit(" on ", 1)[1].strip()


def _read_frames(path: str, count: int, timeout: float = 10.0) -> tuple[bytes, list[LinkFrame]]:
    fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    data = b""
    framer = Framer()
    frames: list[LinkFrame] = []
    deadline = time.monotonic() + timeout
    try:
        while len(frames) < count and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            data += chunk
            framer.feed(chunk)
            while (f := framer.next_frame()) is not NEED_DATA:
                assert isinstance(f, LinkFrame)
                frames.append(f)
    finally:
        os.close(fd)
    return data, frames


def test_cli_pushes_on_a_pty_records_and_links(tmp_path: Path) -> None:
    record, link = tmp_path / "rec.jsonl", tmp_path / "meter0"
    args = ("--model", "e450", "--count", "2", "--interval", "0.1", "--record", str(record), "--link", str(link))
    with _running(*args) as proc:
        path = _pty_path(proc)
        assert os.readlink(link) == path
        data, frames = _read_frames(path, 8)  # 2 pushes of 4 GBT frames
        assert proc.wait(timeout=10) == 0
    assert len(frames) == 8 and sum(f.first for f in frames) == 2
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [r["seq"] for r in lines] == [1, 2]
    assert bytes.fromhex(lines[0]["hex"]) + bytes.fromhex(lines[1]["hex"]) == data
    first = lines[0]
    assert first["model"] == "e450" and first["meter_id"].startswith("LGZ") and first["invocation_counter"] is None
    assert isinstance(first["values"]["1-1:1.8.0"]["value"], int) and first["values"]["1-1:1.8.0"]["unit"] == "Wh"
    current = first["values"]["1-0:31.7.0"]["value"]
    assert isinstance(current, str) and Decimal(current).as_tuple().exponent == -2
    assert not link.exists() and not link.is_symlink()


def test_cli_encrypted_push_and_replay(tmp_path: Path) -> None:
    record = tmp_path / "rec.jsonl"
    args = ("--model", "omnipower", "--count", "1", "--key", KEY.hex(), "--auth-key", AUTH.hex(), "--record", str(record))
    with _running(*args) as proc:
        data, frames = _read_frames(_pty_path(proc), 1)
        assert proc.wait(timeout=10) == 0
    c = parse_ciphered(frames[0].payload)
    assert decrypt(c, KEY, AUTH)[1]
    assert json.loads(record.read_text())["invocation_counter"] == c.invocation_counter
    capture = tmp_path / "cap.hex"
    capture.write_text("\n".join(data.hex()[i : i + 64] for i in range(0, len(data.hex()), 64)))
    with _running("--replay", str(capture), "--count", "1") as proc:
        replayed, _ = _read_frames(_pty_path(proc), 1)
        assert proc.wait(timeout=10) == 0
    assert replayed == data


def test_cli_writes_to_a_port_url_paced() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        args = ("--model", "e360", "--count", "2", "--interval", "0.1", "--port", os.ttyname(slave), "--pace")
        with _running(*args) as proc:
            assert _pty_path(proc) == os.ttyname(slave)
            data = b""
            deadline = time.monotonic() + 10
            while len(frames_of(data)) < 2 and time.monotonic() < deadline:
                if select.select([master], [], [], 0.2)[0]:
                    data += os.read(master, 4096)
            assert proc.wait(timeout=10) == 0
    finally:
        os.close(master)
        os.close(slave)
    assert [f.raw[1] for f in frames_of(data)] == [0xA1, 0xA1]


def test_pty_sink_drops_what_nobody_reads() -> None:
    sink = PtySink()
    try:
        written = [sink.write(bytes(1000)) for _ in range(200)]  # nobody reads: the pty fills up
        assert 0 in written
        deadline = time.monotonic() + 2.0  # the kernel hands written bytes to the slave side asynchronously
        while not sink.pending() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert 0 < sink.pending() <= sum(written)
    finally:
        sink.close()


def test_cli_bad_key_exits_2_without_echoing_it() -> None:
    secret = "00112233445566778899aabbccddeeXX"
    proc = subprocess.run(
        [sys.executable, "-m", "meterpipe.simulator.main", "--model", "e450", "--key", secret],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 2
    assert "error: --key:" in proc.stderr
    assert secret not in proc.stderr + proc.stdout and "00112233" not in proc.stderr + proc.stdout


def test_cli_reads_keys_from_files(tmp_path: Path) -> None:
    key_file, auth_file = tmp_path / "k", tmp_path / "a"
    key_file.write_text(KEY.hex() + "\n")
    auth_file.write_text(AUTH.hex())
    with _running("--model", "e570", "--count", "1", "--key-file", str(key_file), "--auth-key-file", str(auth_file)) as proc:
        _, frames = _read_frames(_pty_path(proc), 4)
        assert proc.wait(timeout=10) == 0
    apdu = b"".join(f.payload[7:] for f in frames)
    assert decrypt(parse_ciphered(apdu), KEY, AUTH)[1]
    key_file.write_text("not a key at all, 0011223344")
    bad = subprocess.run(
        [sys.executable, "-m", "meterpipe.simulator.main", "--model", "e450", "--key-file", str(key_file)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert bad.returncode == 2 and "error: --key-file:" in bad.stderr and "0011223344" not in bad.stderr


def test_cli_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    link = tmp_path / "meter"
    with _running("--model", "am550", "--interval", "0.1", "--link", str(link)) as proc:
        _, frames = _read_frames(_pty_path(proc), 3)
        assert [f.raw[1] & 0xF8 for f in frames] == [0xA8, 0xA8, 0xA0]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert not link.is_symlink()
