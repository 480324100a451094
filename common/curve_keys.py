"""CurveZMQ settings: who may bind where, key files, and a reader's client socket.

Readers on the decoder's host talk over ``ipc://`` in a 0700 runtime directory
or ``tcp://127.0.0.1``; nobody else can reach those. A reader on another host
connects over ``tcp://`` and must use CurveZMQ (see :mod:`meterpipe.common.curve`
for the decoder's server side). Key files are ZeroMQ certificates as
``zmq.auth.create_certificates`` writes them (``meterpipe keys`` makes them):
``NAME.key`` holds the public key, ``NAME.key_secret`` both keys.

This module holds what the config check (:func:`check_security`) and the reader
(:func:`secure_frames_client`) need, and nothing that starts a thread: every
reader process imports it, so it stays light. Secret keys are read here, set on
sockets and never rendered: messages name the file, never its contents.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from meterpipe.common.config_fields import loose_mode
from meterpipe.common.errors import ConfigError

if TYPE_CHECKING:
    from meterpipe.common.endpoints import EndpointsConfig

log = logging.getLogger(__name__)

Z85_KEY_CHARS = 40  # a 32-byte Curve25519 key in Z85
LOOPBACK_NAMES = frozenset({"localhost"})
_HOST = re.compile(r"^tcp://(?:[^;]+;)?(?P<host>\[[^\]]*\]|[^:]+):[^:]+$")


# --- who may bind where -------------------------------------------------------


def tcp_host(endpoint: str) -> str | None:
    """The host (or interface) of a ``tcp://`` endpoint, brackets removed; None for other schemes."""
    match = _HOST.match(endpoint)
    if match is None:
        return None
    return match["host"].strip("[]")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 (also as ::ffff:127.x.y.z) and ``localhost``; ``*``, names and interfaces are not."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def exposed_host(endpoint: str) -> str | None:
    """The host a ``tcp://`` endpoint reaches beyond this machine, or None when it stays local."""
    host = tcp_host(endpoint)
    if host is None or is_loopback(host):
        return None
    return host


def check_exposure(endpoints: EndpointsConfig) -> None:
    """Raise ConfigError for a socket that other hosts could reach without CurveZMQ."""
    host = exposed_host(endpoints.frames)
    if host is not None and not (server_enabled(endpoints) or client_enabled(endpoints)):
        raise ConfigError(
            "endpoints.frames",
            f"binds {host} without CurveZMQ: set endpoints.curve_server_secret and "
            "curve_authorized_dir, or use 127.0.0.1 (a reader on another host sets "
            "curve_server_public and curve_client_secret; see `meterpipe keys`)",
        )
    host = exposed_host(endpoints.readings)
    if host is not None:
        raise ConfigError(
            "endpoints.readings",
            f"binds {host}, but the readings socket has no CurveZMQ: use ipc:// or "
            "127.0.0.1 and run the publishers on the decoder's host",
        )


# --- key files ------------------------------------------------------------------


def server_enabled(endpoints: EndpointsConfig) -> bool:
    return endpoints.curve_server_secret is not None


def client_enabled(endpoints: EndpointsConfig) -> bool:
    return endpoints.curve_server_public is not None


def _certificate(path: Path, field: str) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise ConfigError(field, f"file {path} does not exist; make one with `meterpipe keys`")
    from zmq.auth import load_certificate  # zmq.auth (datetime, glob): only when CurveZMQ is configured

    try:
        public, secret = load_certificate(path)
    except OSError as exc:
        raise ConfigError(field, f"cannot read {path}: {exc.strerror or 'error'}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        # pyzmq's messages name the file only; still, say it ourselves
        raise ConfigError(field, f"{path} is not a ZeroMQ certificate file (no public-key line); "
                          "make one with `meterpipe keys`") from exc
    if len(public) != Z85_KEY_CHARS or (secret is not None and len(secret) != Z85_KEY_CHARS):
        raise ConfigError(field, f"{path}: a key in it is not {Z85_KEY_CHARS} Z85 characters; "
                          "make a new pair with `meterpipe keys`")
    return public, secret


def load_public_key(path: Path, field: str) -> bytes:
    """The Z85 public key of a ``.key`` (or ``.key_secret``) file."""
    return _certificate(path, field)[0]


def load_key_pair(path: Path, field: str, warnings: list[str] | None = None) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys of a ``.key_secret`` file; ``warnings`` gets a line if it is loose."""
    public, secret = _certificate(path, field)
    if secret is None:
        raise ConfigError(field, f"{path} holds no secret key: name the .key_secret file, "
                          "not the public .key")
    if warnings is not None and loose_mode(path):
        warnings.append(f"{field}: {path} is readable by group or others; run chmod 600 {path}")
    return public, secret


def authorized_keys(directory: Path, field: str) -> dict[bytes, bool]:
    """The public keys of every ``*.key`` file in ``directory`` (as zmq.auth reads them)."""
    if not directory.is_dir():
        raise ConfigError(field, f"{directory} is not a directory; make it and copy each reader's "
                          "public .key file into it")
    for path in sorted(directory.glob("*.key")):
        _certificate(path, field)
    from zmq.auth import load_certificates  # as in _certificate: only when CurveZMQ is configured

    return load_certificates(directory)


def check_security(endpoints: EndpointsConfig, warnings: list[str]) -> None:
    """Config-time check of the CurveZMQ settings and of which sockets are exposed."""
    pairs = (("curve_server_secret", "curve_authorized_dir"), ("curve_server_public", "curve_client_secret"))
    for first, second in pairs:
        a, b = getattr(endpoints, first), getattr(endpoints, second)
        if (a is None) != (b is None):
            given, missing = (first, second) if b is None else (second, first)
            raise ConfigError(f"endpoints.{missing}", f"needed together with endpoints.{given}")
    if endpoints.curve_server_secret is not None and endpoints.curve_authorized_dir is not None:
        load_key_pair(endpoints.curve_server_secret, "endpoints.curve_server_secret", warnings)
        keys = authorized_keys(endpoints.curve_authorized_dir, "endpoints.curve_authorized_dir")
        if not keys:
            warnings.append(f"endpoints.curve_authorized_dir: {endpoints.curve_authorized_dir} holds "
                            "no .key file yet: no reader can connect")
    if endpoints.curve_server_public is not None and endpoints.curve_client_secret is not None:
        load_public_key(endpoints.curve_server_public, "endpoints.curve_server_public")
        load_key_pair(endpoints.curve_client_secret, "endpoints.curve_client_secret", warnings)
    check_exposure(endpoints)


# --- the reader's socket ----------------------------------------------------------


def secure_frames_client(sock: zmq.Socket[Any], endpoints: EndpointsConfig) -> bool:
    """Before connect: make ``sock`` a CURVE client when curve_server_public is set."""
    server_path, secret_path = endpoints.curve_server_public, endpoints.curve_client_secret
    if server_path is None or secret_path is None:
        host = exposed_host(endpoints.frames)
        if host is not None:
            log.warning("frames: connecting to %s without CurveZMQ; the decoder will refuse "
                        "or anyone on the path can read the frames", host)
        return False
    server = load_public_key(server_path, "endpoints.curve_server_public")
    public, secret = load_key_pair(secret_path, "endpoints.curve_client_secret")
    sock.setsockopt(zmq.CURVE_SERVERKEY, server)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
    log.info("frames: CurveZMQ client of the server key in %s", server_path)
    return True
