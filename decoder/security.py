"""DLMS/COSEM ciphering: general-glo-ciphering (0xDB) and general-ded-ciphering (0xDF).

Sans-IO. AES-128-GCM from ``cryptography``:
IV = system title (8 bytes) + invocation counter (4 bytes, big endian);
AAD = security control byte + authentication key (+ the plaintext when the push
is authenticated only). The 12-byte tag is verified whenever the meter sends one
and an authentication key is configured. With a tag but no authentication key,
the ciphertext is decrypted with GCM's counter mode alone (AES-CTR starting at
counter block 2) and the result is marked unauthenticated.

Keys never appear in errors; the meter name and advice do.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from meterpipe.common.errors import AuthError, DecryptError, TruncatedError, UnsupportedError
from meterpipe.decoder.axdr import encode_length, read_length

GLO_CIPHERING = 0xDB
DED_CIPHERING = 0xDF
CIPHERED_TAGS = frozenset({GLO_CIPHERING, DED_CIPHERING})

SC_AUTHENTICATED = 0x10
SC_ENCRYPTED = 0x20
SC_KEY_SET = 0x40  # dedicated vs. global key: informational here
SC_COMPRESSED = 0x80
TAG_LEN = 12

# First bytes a decrypted push may start with: data-notification, or another
# ciphered/GBT layer for meters that nest them.
PLAINTEXT_TAGS = frozenset({0x0F, 0xE0})


@dataclass(frozen=True, slots=True)
class Ciphered:
    """The header and body of a ciphered APDU, not yet decrypted."""

    tag: int
    system_title: bytes
    security: int
    invocation_counter: int
    body: bytes  # ciphertext (or plaintext when authenticated only), without the tag
    auth_tag: bytes  # empty when the push carries none

    @property
    def encrypted(self) -> bool:
        return bool(self.security & SC_ENCRYPTED)

    @property
    def authenticated(self) -> bool:
        return bool(self.security & SC_AUTHENTICATED)


def parse_ciphered(apdu: bytes) -> Ciphered:
    """Split a general-glo/ded-ciphering APDU into its parts."""
    if not apdu or apdu[0] not in CIPHERED_TAGS:
        raise UnsupportedError("not a general-glo/ded-ciphering APDU", data=apdu)
    title_len, pos = read_length(apdu, 1)
    if title_len != 8:
        raise UnsupportedError(f"system title of {title_len} bytes (expected 8)", data=apdu)
    system_title = apdu[pos : pos + 8]
    length, pos = read_length(apdu, pos + 8)
    if pos + length > len(apdu):
        raise TruncatedError(
            f"ciphered APDU declares {length} bytes, {len(apdu) - pos} present", data=apdu
        )
    if length < 5:
        raise TruncatedError("ciphered APDU too short for its security header", data=apdu)
    security = apdu[pos]
    if security & SC_COMPRESSED:
        raise UnsupportedError("compressed ciphered APDUs are not supported", data=apdu)
    if not security & (SC_AUTHENTICATED | SC_ENCRYPTED):
        raise UnsupportedError(f"security control byte 0x{security:02x} names no protection", data=apdu)
    invocation_counter = int.from_bytes(apdu[pos + 1 : pos + 5], "big")
    body_end = pos + length
    tag_len = TAG_LEN if security & SC_AUTHENTICATED else 0
    if length - 5 < tag_len:
        raise TruncatedError("ciphered APDU too short for its authentication tag", data=apdu)
    return Ciphered(
        tag=apdu[0],
        system_title=bytes(system_title),
        security=security,
        invocation_counter=invocation_counter,
        body=bytes(apdu[pos + 5 : body_end - tag_len]),
        auth_tag=bytes(apdu[body_end - tag_len : body_end]),
    )


def _iv(c: Ciphered) -> bytes:
    return c.system_title + c.invocation_counter.to_bytes(4, "big")


def _ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    # GCM encrypts with counter blocks IV || 2, IV || 3, ... (IV || 1 masks the tag).
    decryptor = Cipher(algorithms.AES(key), modes.CTR(iv + b"\x00\x00\x00\x02")).decryptor()
    return decryptor.update(data) + decryptor.finalize()


def _gcm_open(key: bytes, iv: bytes, aad: bytes, body: bytes, auth_tag: bytes) -> bytes:
    """Decrypt and verify with a 12-byte (truncated) GCM tag; raises InvalidTag."""
    decryptor = Cipher(algorithms.AES(key), modes.GCM(iv, auth_tag, min_tag_length=TAG_LEN)).decryptor()
    decryptor.authenticate_additional_data(aad)
    return decryptor.update(body) + decryptor.finalize()


def decrypt(c: Ciphered, key: bytes | None, auth_key: bytes | None) -> tuple[bytes, bool]:
    """Return (plaintext APDU, tag verified).

    Raises DecryptError for a missing or wrong encryption key and AuthError when
    the tag does not verify.
    """
    if c.encrypted and key is None:
        raise DecryptError(
            "the meter encrypts its pushes but no encryption key is configured: "
            "set 'key' (or key_file / key_env) for this meter; the grid operator hands it out"
        )
    if c.authenticated and auth_key is not None:
        aad = bytes([c.security]) + auth_key
        if c.encrypted:
            assert key is not None
            try:
                plain = _gcm_open(key, _iv(c), aad, c.body, c.auth_tag)
            except InvalidTag as exc:
                raise AuthError(
                    "authentication tag check failed: the encryption key (key) or the "
                    "authentication key (auth_key) is wrong, or the data was altered on the way "
                    "(GCM cannot tell which); check both keys"
                ) from exc
        else:
            if key is None:
                raise AuthError(
                    "the meter authenticates its pushes with GMAC, which needs the encryption "
                    "key too: set 'key' for this meter"
                )
            try:
                _gcm_open(key, _iv(c), aad + c.body, b"", c.auth_tag)
            except InvalidTag as exc:
                raise AuthError(
                    "authentication tag check failed: check the encryption key (key) and the "
                    "authentication key (auth_key) (GCM cannot tell which is wrong, nor a wrong "
                    "key from altered data)"
                ) from exc
            plain = c.body
        return plain, True
    if not c.encrypted:
        return c.body, False
    assert key is not None
    plain = _ctr(key, _iv(c), c.body)
    if not plain or plain[0] not in PLAINTEXT_TAGS:
        raise DecryptError(
            "decryption gave no valid APDU: check the encryption key (key) of this meter"
        )
    return plain, False


def encrypt(
    apdu: bytes,
    *,
    system_title: bytes,
    invocation_counter: int,
    key: bytes,
    auth_key: bytes | None,
    security: int = SC_AUTHENTICATED | SC_ENCRYPTED,
    tag: int = GLO_CIPHERING,
) -> bytes:
    """Build a ciphered APDU, as a meter does (used by the simulator and tests)."""
    if len(system_title) != 8:
        raise ValueError("system title must be 8 bytes")
    iv = system_title + invocation_counter.to_bytes(4, "big")
    if security & SC_AUTHENTICATED:
        if auth_key is None:
            raise ValueError("an authenticated push needs an authentication key")
        aad = bytes([security]) + auth_key
        if security & SC_ENCRYPTED:
            sealed = AESGCM(key).encrypt(iv, apdu, aad)
            body, auth_tag = sealed[:-16], sealed[-16:-4]
        else:
            body, auth_tag = apdu, AESGCM(key).encrypt(iv, b"", aad + apdu)[:TAG_LEN]
    else:
        encryptor = Cipher(algorithms.AES(key), modes.CTR(iv + b"\x00\x00\x00\x02")).encryptor()
        body, auth_tag = encryptor.update(apdu) + encryptor.finalize(), b""
    inner = bytes([security]) + invocation_counter.to_bytes(4, "big") + body + auth_tag
    return bytes([tag, 8]) + system_title + encode_length(len(inner)) + inner
