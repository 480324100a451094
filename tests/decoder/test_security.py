"""GCM authentication, replay protection and key hygiene, on real encrypted captures.

Each attack is shown twice: meterpipe rejects it with the error kind a person can
act on, and gurux-dlms driven the way the reference collector drives it
(smartmeter_datacollector's HdlcDlmsParser: GXDLMSSecureClient + getData) accepts it
and hands out data. No key material may ever appear in an error.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import pytest

from meterpipe.common.errors import (
    AuthError,
    DecryptError,
    MeterpipeError,
    ReplayError,
    UnsupportedError,
)
from meterpipe.common.link.crc import crc16_x25
from meterpipe.common.values import Push
from meterpipe.decoder.security import (
    DED_CIPHERING,
    GLO_CIPHERING,
    SC_AUTHENTICATED,
    SC_ENCRYPTED,
    Ciphered,
    decrypt,
    encrypt,
    parse_ciphered,
)
from meterpipe.decoder.session import MeterDecoder
from tests.conftest import keys, needs_corpus, vector
from tests.decoder.strategies import apdus, link_frames

AUTHENTICATED = ["dlmsp-kamstrup-omnipower-enc", "dlmsp-lg-e450-enc-gbt-1"]  # security 0x30, auth key known
WRONG_KEY = bytes(range(0xA0, 0xB0))

# Checked in every error besides the keys a test passes explicitly.
ALWAYS_CHECKED = (WRONG_KEY,)


def assert_no_key_material(err: BaseException, *secrets: bytes | None) -> None:
    texts = (str(err), repr(err), getattr(err, "excerpt", ""))
    for secret in (*secrets, *ALWAYS_CHECKED):
        if secret is None:
            continue
        for form in (secret.hex(), secret.hex().upper()):
            for text in texts:
                assert form not in text, f"key material in error: {text!r}"


def errors_of(out: list[Push | MeterpipeError], *secrets: bytes | None) -> list[MeterpipeError]:
    errs = [o for o in out if isinstance(o, MeterpipeError)]
    for err in errs:
        assert_no_key_material(err, *secrets)
    return errs


def pushes(out: list[Push | MeterpipeError]) -> list[Push]:
    return [o for o in out if isinstance(o, Push)]


def tamper_ciphertext(v: dict[str, Any]) -> bytes:
    """The capture with one ciphertext bit flipped and its HDLC FCS made valid again,
    so the link layer passes and only GCM can notice."""
    frames = [bytearray(f.raw) for f in link_frames(v)]
    body = parse_ciphered(apdus(v)[0]).body
    for k in range(len(body) // 2, len(body) - 8):
        for frame in frames:
            i = frame.find(body[k : k + 8])
            if i > 0:
                frame[i] ^= 0x01
                frame[-3:-1] = crc16_x25(bytes(frame[1:-3])).to_bytes(2, "little")
                return b"".join(frames)
    raise AssertionError("no ciphertext found inside one frame")


def gurux_decode(data: bytes, key: bytes, auth_key: bytes | None = None) -> list[str]:
    """Feed an HDLC stream to gurux-dlms as the reference collector does; the text
    of each complete push's value, in order (exceptions propagate)."""
    from gurux_dlms import GXByteBuffer, GXReplyData
    from gurux_dlms.enums import InterfaceType, Security
    from gurux_dlms.secure import GXDLMSSecureClient

    client = GXDLMSSecureClient(True, interfaceType=InterfaceType.HDLC)
    client.ciphering.security = Security.ENCRYPTION
    client.ciphering.blockCipherKey = key
    if auth_key is not None:
        client.ciphering.security = Security.AUTHENTICATION_ENCRYPTION
        client.ciphering.authenticationKey = auth_key
    buf = GXByteBuffer()
    buf.set(data)
    reply = GXReplyData()
    values: list[str] = []
    with contextlib.redirect_stdout(io.StringIO()):  # gurux prints "Encryption is applied."
        while buf.position < buf.size:
            before = buf.position
            client.getData(buf, GXReplyData(), reply)
            if reply.isComplete() and not reply.isMoreData():
                values.append(str(reply.value))
                reply.clear()
            if buf.position == before:
                break
    return values


# --- (a) a flipped ciphertext bit ------------------------------------------------


@needs_corpus
@pytest.mark.corpus
@pytest.mark.parametrize("vid", AUTHENTICATED)
def test_flipped_ciphertext_bit_is_rejected_as_auth(vid: str) -> None:
    v = vector(vid)
    key, auth = keys(v)
    assert parse_ciphered(apdus(v)[0]).security == 0x30
    clean = MeterDecoder("m", key=key, auth_key=auth).feed(bytes.fromhex(v["bytes_hex"]))
    assert pushes(clean) and pushes(clean)[0].authenticated

    out = MeterDecoder("m", key=key, auth_key=auth).feed(tamper_ciphertext(v))
    errs = errors_of(out, key, auth)
    assert not pushes(out)
    assert [e.kind for e in errs] == ["auth"]
    assert isinstance(errs[0], AuthError) and errs[0].meter == "m"


@needs_corpus
@pytest.mark.corpus
@pytest.mark.parametrize("vid", AUTHENTICATED)
def test_gurux_alone_accepts_a_flipped_ciphertext_bit(vid: str) -> None:
    # Observed with gurux-dlms 1.0.203: getData decrypts without checking the GCM
    # tag, with or without the authentication key set, and returns the push with
    # the altered plaintext: no exception, no warning.
    v = vector(vid)
    key, auth = keys(v)
    assert key is not None and auth is not None
    clean = gurux_decode(bytes.fromhex(v["bytes_hex"]), key, auth)
    for auth_key in (auth, None):
        altered = gurux_decode(tamper_ciphertext(v), key, auth_key)
        assert len(altered) == 1
        assert altered != clean  # one flipped bit: a different value, silently accepted


# --- (b) wrong authentication key -------------------------------------------------


@needs_corpus
@pytest.mark.corpus
@pytest.mark.parametrize("vid", AUTHENTICATED)
def test_wrong_auth_key_is_auth_error_naming_both_keys(vid: str) -> None:
    v = vector(vid)
    key, auth = keys(v)
    out = MeterDecoder("m", key=key, auth_key=WRONG_KEY).feed(bytes.fromhex(v["bytes_hex"]))
    errs = errors_of(out, key, auth)
    assert not pushes(out) and [e.kind for e in errs] == ["auth"]
    message = str(errs[0])
    assert "cannot tell which" in message
    assert "(key)" in message and "(auth_key)" in message


@needs_corpus
@pytest.mark.corpus
@pytest.mark.parametrize("vid", AUTHENTICATED)
def test_gurux_alone_accepts_a_wrong_auth_key(vid: str) -> None:
    # Observed: gurux never uses the authentication key to check anything on a
    # received push; the result equals the one with the right key.
    v = vector(vid)
    key, auth = keys(v)
    assert key is not None
    data = bytes.fromhex(v["bytes_hex"])
    assert gurux_decode(data, key, WRONG_KEY) == gurux_decode(data, key, auth)
    assert len(gurux_decode(data, key, WRONG_KEY)) == 1


def test_gmac_only_push_with_wrong_auth_key_is_auth_error() -> None:
    key, auth = bytes(range(16)), bytes(range(16, 32))
    apdu = encrypt(PLAIN, system_title=TITLE, invocation_counter=7, key=key, auth_key=auth, security=SC_AUTHENTICATED)
    with pytest.raises(AuthError) as info:
        decrypt(parse_ciphered(apdu), key, WRONG_KEY)
    assert "(key)" in str(info.value) and "(auth_key)" in str(info.value)
    assert_no_key_material(info.value, key, auth)
    # altered plaintext under a valid-looking header: the tag catches it too
    tampered = bytearray(apdu)
    tampered[20] ^= 0x40
    with pytest.raises(AuthError) as info:
        decrypt(parse_ciphered(bytes(tampered)), key, auth)
    assert_no_key_material(info.value, key, auth)


# --- (c) replay -------------------------------------------------------------------


@needs_corpus
@pytest.mark.corpus
@pytest.mark.parametrize("vid", AUTHENTICATED)
def test_same_push_twice_is_replay(vid: str) -> None:
    v = vector(vid)
    key, auth = keys(v)
    data = bytes.fromhex(v["bytes_hex"])
    decoder = MeterDecoder("m", key=key, auth_key=auth)
    first = decoder.feed(data)
    second = decoder.feed(data)
    assert len(pushes(first)) == 1 and not errors_of(first)
    errs = errors_of(second, key, auth)
    assert not pushes(second) and [e.kind for e in errs] == ["replay"]
    assert isinstance(errs[0], ReplayError) and "replayed or reordered" in str(errs[0])


@needs_corpus
@pytest.mark.corpus
@pytest.mark.parametrize("vid", AUTHENTICATED)
def test_lower_invocation_counter_is_replay(vid: str) -> None:
    """The capture's own plaintext sealed again with counter - 1, by the same keys and
    title (a valid tag: only the counter check can refuse it), after the original."""
    v = vector(vid)
    key, auth = keys(v)
    assert key is not None and auth is not None
    original = apdus(v)[0]
    c = parse_ciphered(original)
    plain, _ = decrypt(c, key, auth)
    older = encrypt(
        plain, system_title=c.system_title, invocation_counter=c.invocation_counter - 1, key=key, auth_key=auth
    )
    newer = encrypt(
        plain, system_title=c.system_title, invocation_counter=c.invocation_counter + 1, key=key, auth_key=auth
    )
    decoder = MeterDecoder("m", key=key, auth_key=auth)
    assert pushes(decoder.feed_apdu(original))
    out = decoder.feed_apdu(older)
    assert [e.kind for e in errors_of(out, key, auth)] == ["replay"] and not pushes(out)
    # the counter is not raised by the rejected push; a later one still passes
    later = decoder.feed_apdu(newer)
    assert pushes(later) and pushes(later)[0].invocation_counter == c.invocation_counter + 1
    # the older one alone, to a fresh decoder, is fine: the rejection was the counter's
    assert pushes(MeterDecoder("m", key=key, auth_key=auth).feed_apdu(older))


@needs_corpus
@pytest.mark.corpus
@pytest.mark.parametrize("vid", AUTHENTICATED)
def test_gurux_alone_accepts_a_replayed_push(vid: str) -> None:
    # Observed: gurux keeps no invocation counter for received pushes; the same
    # capture fed twice yields the same data twice.
    v = vector(vid)
    key, auth = keys(v)
    assert key is not None
    data = bytes.fromhex(v["bytes_hex"])
    values = gurux_decode(data + data, key, auth)
    assert len(values) == 2 and values[0] == values[1]


# --- (d) wrong encryption key -----------------------------------------------------


@needs_corpus
@pytest.mark.corpus
@pytest.mark.parametrize(
    ("vid", "use_auth"),
    [
        ("sdc-lg-e570-ch-enc-gbt", False),  # security 0x20
        ("dlmsp-kaifa-ma309-at-netznoe-mbus-enc", False),  # security 0x20 over M-Bus
        ("dlmsp-kamstrup-omnipower-enc", False),  # 0x30 without auth key: CTR only
        ("dlmsp-lg-e450-enc-gbt-1", False),
        ("sdc-lg-e450-ch-enc-gbt-nopushlist", False),
    ],
)
def test_wrong_encryption_key_is_decrypt_error_with_advice(vid: str, use_auth: bool) -> None:
    v = vector(vid)
    key, auth = keys(v)
    out = MeterDecoder("m", key=WRONG_KEY, auth_key=auth if use_auth else None).feed(bytes.fromhex(v["bytes_hex"]))
    errs = errors_of(out, key, auth)
    assert not pushes(out)
    assert [e.kind for e in errs] == ["decrypt"]
    assert isinstance(errs[0], DecryptError)
    assert "check the encryption key (key)" in str(errs[0])


@needs_corpus
@pytest.mark.corpus
def test_wrong_encryption_key_with_auth_key_is_auth_error() -> None:
    """With a tag and an auth key, GCM cannot separate a wrong key from a wrong auth key."""
    v = vector("dlmsp-kamstrup-omnipower-enc")
    key, auth = keys(v)
    out = MeterDecoder("m", key=WRONG_KEY, auth_key=auth).feed(bytes.fromhex(v["bytes_hex"]))
    assert [e.kind for e in errors_of(out, key, auth)] == ["auth"]


@needs_corpus
@pytest.mark.corpus
def test_encrypted_push_without_key_says_so() -> None:
    v = vector("dlmsp-kamstrup-omnipower-enc")
    key, auth = keys(v)
    out = MeterDecoder("m").feed(bytes.fromhex(v["bytes_hex"]))
    errs = errors_of(out, key, auth)
    assert [e.kind for e in errs] == ["decrypt"] and "no encryption key is configured" in str(errs[0])


@needs_corpus
@pytest.mark.corpus
def test_authenticated_push_without_auth_key_decodes_unauthenticated() -> None:
    v = vector("dlmsp-kamstrup-omnipower-enc")
    key, _ = keys(v)
    (push,) = pushes(MeterDecoder("m", key=key).feed(bytes.fromhex(v["bytes_hex"])))
    assert push.encrypted and not push.authenticated


# --- (f) key hygiene --------------------------------------------------------------


def test_meter_decoder_repr_shows_no_keys() -> None:
    key, auth = bytes(range(16)), bytes(range(16, 32))
    decoder = MeterDecoder("house", key=key, auth_key=auth, model="e450")
    text = repr(decoder) + str(decoder)
    for secret in (key, auth):
        assert secret.hex() not in text and secret.hex().upper() not in text
        assert repr(secret) not in text
    assert "house" in text


def test_malformed_ciphered_apdus_never_name_the_configured_keys() -> None:
    """Errors carry a hex excerpt of the *received* bytes; even when those bytes
    happen to hold the key, the message itself never names a configured key."""
    key, auth = bytes(range(16)), bytes(range(16, 32))
    decoder = MeterDecoder("m", key=key, auth_key=auth)
    for apdu in (b"\xdb\x08" + bytes(8) + b"\x03\x30\x00\x00", b"\xdb\x07" + key, b"\xdf\x08" + auth[:8] + b"\x00"):
        (err,) = errors_of(decoder.feed_apdu(apdu))
        assert isinstance(err, MeterpipeError)
        for secret in (key, auth):
            assert secret.hex() not in str(err) and secret.hex().upper() not in str(err)


# --- (g) encrypt -> decrypt round trips -------------------------------------------

TITLE = bytes.fromhex("4d4d4d0000bc614e")
# data-notification, no date-time, body {1-0:1.8.0, 4660}
PLAIN = bytes.fromhex("0f0000000100" "0202" "09060100010800ff" "0600001234")


@pytest.mark.parametrize("tag", [GLO_CIPHERING, DED_CIPHERING])
@pytest.mark.parametrize("security", [SC_AUTHENTICATED, SC_ENCRYPTED, SC_AUTHENTICATED | SC_ENCRYPTED])
def test_encrypt_decrypt_round_trip(tag: int, security: int) -> None:
    key, auth = bytes(range(16)), bytes(range(16, 32))
    apdu = encrypt(PLAIN, system_title=TITLE, invocation_counter=0x01020304, key=key, auth_key=auth, security=security, tag=tag)
    c = parse_ciphered(apdu)
    assert c == Ciphered(
        tag, TITLE, security, 0x01020304, c.body, c.auth_tag
    ) and len(c.auth_tag) == (12 if security & SC_AUTHENTICATED else 0)
    assert (c.body == PLAIN) == (not security & SC_ENCRYPTED)
    plain, verified = decrypt(c, key, auth)
    assert plain == PLAIN and verified == bool(security & SC_AUTHENTICATED)
    if security & SC_ENCRYPTED:
        # without the auth key the ciphertext still decrypts (CTR), unverified
        assert decrypt(c, key, None) == (PLAIN, False)
    # and through the whole session, bare and as a ciphered push
    (push,) = MeterDecoder("m", key=key, auth_key=auth).feed_apdu(apdu)
    assert isinstance(push, Push) and push.invocation_counter == 0x01020304
    assert [(r.obis, r.value) for r in push.readings] == [("1-0:1.8.0", 0x1234)]
    assert push.system_title == TITLE.hex().upper()
    assert push.authenticated == bool(security & SC_AUTHENTICATED)
    assert push.encrypted == bool(security & SC_ENCRYPTED)


def test_round_trip_with_long_body_uses_long_length_form() -> None:
    key, auth = bytes(range(16)), bytes(range(16, 32))
    body = b"\x09\x82\x01\x2c" + bytes(300)
    plain = b"\x0f\x00\x00\x00\x01\x00" + body
    apdu = encrypt(plain, system_title=TITLE, invocation_counter=1, key=key, auth_key=auth)
    assert apdu[10] == 0x82
    assert decrypt(parse_ciphered(apdu), key, auth) == (plain, True)


@pytest.mark.parametrize(
    "apdu",
    [
        b"",
        b"\x0f\x00",
        b"\xdb\x07" + bytes(7) + b"\x05\x20\x00\x00\x00\x01",  # 7-byte system title
        b"\xdb\x08" + bytes(8) + b"\x05\x00\x00\x00\x00\x01",  # security names no protection
        b"\xdb\x08" + bytes(8) + b"\x05\xa0\x00\x00\x00\x01",  # compressed
    ],
)
def test_parse_ciphered_refuses_odd_headers_as_unsupported(apdu: bytes) -> None:
    with pytest.raises(UnsupportedError):
        parse_ciphered(apdu)


@pytest.mark.parametrize(
    "apdu",
    [
        b"\xdb\x08" + bytes(8) + b"\x85\x20",  # 5 length bytes: a lying length field
        b"\xdb\x08" + bytes(8) + b"\x20\x20\x00",  # declares 32 bytes, has 2
        b"\xdb\x08" + bytes(8) + b"\x04\x20\x00\x00\x00",  # shorter than its header
        b"\xdb\x08" + bytes(8) + b"\x08\x30\x00\x00\x00\x01\x00\x00\x00",  # too short for a tag
        b"\xdb\x08" + bytes(4),  # title cut short
    ],
)
def test_parse_ciphered_refuses_cut_apdus_as_truncated(apdu: bytes) -> None:
    with pytest.raises(MeterpipeError) as info:
        parse_ciphered(apdu)
    assert info.value.kind == "truncated"


def test_a_push_that_fails_to_decode_does_not_move_the_invocation_counter() -> None:
    from meterpipe.decoder.security import encrypt

    key, title = bytes(range(16)), b"TESTMETR"
    good = b"\x0f\x00\x00\x00\x01\x00\x02\x02\x09\x06\x01\x00\x01\x08\x00\xff\x06\x00\x00\x00\x07"
    decoder = MeterDecoder("m", key=key)
    # a forged counter far ahead, encrypting something that is no data-notification
    forged = encrypt(b"\x0f\x00", system_title=title, invocation_counter=0xFFFFFFFF, key=key, auth_key=None,
                     security=0x20)
    assert [o.kind for o in decoder.feed_apdu(forged) if isinstance(o, MeterpipeError)] == ["decrypt"]
    real = encrypt(good, system_title=title, invocation_counter=5, key=key, auth_key=None, security=0x20)
    (push,) = decoder.feed_apdu(real)
    assert isinstance(push, Push) and push.invocation_counter == 5
