"""``meterpipe decode`` as a user runs it: a subprocess fed real captures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import needs_corpus, vector

pytestmark = needs_corpus


def run(args: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "meterpipe.decoder.cli", *args], input=stdin, capture_output=True, timeout=60
    )


def pasted(v: dict[str, Any]) -> bytes:
    """The capture as a user pastes it: 0x-prefixed bytes, wrapped lines."""
    hexstr = v["bytes_hex"]
    pairs = ["0x" + hexstr[i : i + 2] for i in range(0, len(hexstr), 2)]
    return "\n".join(" ".join(pairs[i : i + 16]) for i in range(0, len(pairs), 16)).encode() + b"\n"


def test_pasted_encrypted_capture_prints_one_json_push() -> None:
    v = vector("dlmsp-kamstrup-omnipower-enc")
    r = run(["--key", v["key"], "--auth-key", v["auth_key"], "-"], pasted(v))
    assert r.returncode == 0, r.stderr
    pushes = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert len(pushes) == 1
    push = pushes[0]
    assert push["system_title"] == v["system_title"]
    assert push["authenticated"] is True
    values = {x["obis"]: x for x in push["readings"]}
    assert values["1-1:31.7.0"] == {"obis": "1-1:31.7.0", "name": "current_l1", "value": 0.57, "unit": "A"}
    assert values["1-1:1.7.0"]["value"] == 1083 and values["1-1:1.7.0"]["unit"] == "W"


def test_binary_file_and_apdu_format(tmp_path: Path) -> None:
    v = vector("ams-sagemcom-t210d-at-rawapdu-gh867-2")
    capture = tmp_path / "push.bin"
    capture.write_bytes(bytes.fromhex(v["bytes_hex"]))
    r = run(["--binary", "--format", "apdu", str(capture)])
    assert r.returncode == 0, r.stderr
    push = json.loads(r.stdout)
    assert push["meter_id"] == v["expect"]["meter_id"]
    assert push["time"].startswith("2024-11-15T14:45:45")


@pytest.mark.parametrize("bad", ["auth", "decrypt"])
def test_wrong_key_is_one_error_line_with_advice_and_no_key(bad: str) -> None:
    v = vector("dlmsp-lg-e450-enc-gbt-1")
    wrong = "000102030405060708090A0B0C0D0E0F"
    args = ["--key", v["key"], "--auth-key", wrong] if bad == "auth" else ["--key", wrong]
    r = run([*args, "-"], pasted(v))
    err = r.stderr.decode()
    assert r.returncode == 1 and r.stdout == b""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert lines and lines[0].startswith(f"error: {bad}: ")
    assert "key" in lines[0] and "Traceback" not in err
    if bad == "auth":
        assert "cannot tell" in lines[0]
    for secret in (wrong, v["key"], v["auth_key"]):
        assert secret.lower() not in err.lower()


def test_bad_key_is_a_usage_error_without_echo() -> None:
    r = run(["--key", "DEADBEEF0123", "-"], b"7e")
    assert r.returncode == 2
    assert b"DEADBEEF0123" not in r.stderr.upper() and b"12 hex digits" in r.stderr


def test_broken_capture_exit_1_with_kind() -> None:
    v = vector("sdc-lg-e450-ch-broken-dup-block")
    r = run(["-"], v["bytes_hex"].encode())
    assert r.returncode == 1 and r.stdout == b""
    assert b"error: sequence: " in r.stderr


def test_checksum_error_is_reported() -> None:
    v = vector("sdc-lg-e360-ch-unenc-vse2026")
    data = bytearray.fromhex(v["bytes_hex"])
    data[40] ^= 0x01
    r = run(["-"], data.hex().encode())
    assert r.returncode == 1
    assert r.stderr.decode().startswith("error: checksum: ")


def test_not_hex_is_usage_error() -> None:
    r = run(["-"], b"hello meter")
    assert r.returncode == 2 and b"--binary" in r.stderr
