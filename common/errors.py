"""The one error root of meterpipe and its branches.

Contract (as in h11): every parser, fed any bytes, returns a result or raises a
subclass of :class:`MeterpipeError`; anything else escaping is a bug. Pure code
raises; only process loops decide what to do (count, log, continue; or exit).

Each error carries a ``kind`` (the word shown to users: ``error: <kind>: ...``),
the meter it concerns when known, and at most a short hex excerpt of the bytes
involved. Keys never appear in an error: use :func:`fingerprint`.
"""

from __future__ import annotations

_EXCERPT_BYTES = 24


def excerpt(data: bytes, limit: int = _EXCERPT_BYTES) -> str:
    """Short hex excerpt of ``data`` for error context (never used for key material)."""
    head = bytes(data[:limit]).hex()
    return head + ("..." if len(data) > limit else "")


def fingerprint(secret: bytes) -> str:
    """A non-reversible 8-hex-digit tag for a key, safe to log."""
    import hashlib  # loads OpenSSL: only for the few callers that show a key's fingerprint

    return hashlib.sha256(b"meterpipe-key-fingerprint:" + secret).hexdigest()[:8]


class MeterpipeError(Exception):
    """Root of every error meterpipe raises on purpose."""

    kind = "error"

    def __init__(self, message: str, *, meter: str | None = None, data: bytes = b"") -> None:
        super().__init__(message)
        self.message = message
        self.meter = meter
        self.excerpt = excerpt(data) if data else ""

    def __str__(self) -> str:
        return self.message

    def for_meter(self, meter: str) -> MeterpipeError:
        """Attach the meter name when the layer that raised did not know it."""
        if self.meter is None:
            self.meter = meter
        return self


# --- link layer -------------------------------------------------------------


class FrameError(MeterpipeError):
    """A link-layer frame is malformed (cut short, lying length, bad bytes)."""

    kind = "truncated"


class ChecksumError(FrameError):
    """HDLC HCS/FCS or M-Bus checksum mismatch."""

    kind = "checksum"


class BufferOverflowError(FrameError):
    """More bytes buffered without a complete frame than the framer allows."""

    kind = "truncated"


# --- above the link layer ---------------------------------------------------


class DecodeError(MeterpipeError):
    """A frame was intact but its content cannot be turned into readings."""

    kind = "unsupported"


class UnsupportedError(DecodeError):
    """A layout, APDU or data type meterpipe does not handle."""

    kind = "unsupported"


class TruncatedError(DecodeError):
    """An APDU or A-XDR value ends before its declared length."""

    kind = "truncated"


class SequenceError(DecodeError):
    """Blocks or segments duplicated, out of order, or lost."""

    kind = "sequence"


class SecurityError(DecodeError):
    """Base of the ciphering errors."""

    kind = "decrypt"


class DecryptError(SecurityError):
    """Ciphertext could not be decrypted into a valid APDU (wrong or missing key)."""

    kind = "decrypt"


class AuthError(SecurityError):
    """GCM tag check failed, or an authenticated push came without an auth key."""

    kind = "auth"


class ReplayError(SecurityError):
    """Invocation counter not above the last accepted one."""

    kind = "replay"


# --- wire and configuration -------------------------------------------------


class SchemaError(MeterpipeError):
    """A message on a meterpipe socket does not match the wire schema."""

    kind = "schema"


class ConfigError(MeterpipeError):
    """Invalid configuration; ``field`` names the offending setting."""

    kind = "config"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
