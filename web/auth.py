"""Who may see the data: password hash, sessions, login rate limits, Host and Origin checks.

Pure logic, no ASGI here (:mod:`meterpipe.web.guard` applies it to requests).

* The password is stored as a scrypt hash with its salt and parameters in one line
  (``scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>``), written by ``meterpipe web
  set-password`` at ``[web] password_file`` (mode 0600). :class:`PasswordFile` re-reads
  it when its mtime, size or inode changes, so a new password works at once, and every
  session of the old password ends.
* Sessions are random tokens (``secrets``) kept in memory with an expiry; the cookie
  carries only the token.
* :class:`LoginLimiter` counts failures per client and overall in a sliding window.
* :func:`host_allowed` defends against DNS rebinding: a page of another site whose name
  was re-pointed at this address sends that other name in ``Host``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

SCRYPT_N = 2**14  # 16 MiB of memory per check (128 * r * n), ~50 ms on a Pi 4
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
MIN_PASSWORD = 8

SESSION_COOKIE = "meterpipe_session"
SESSION_SECONDS = 30 * 24 * 3600
MAX_SESSIONS = 64

LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


# Passwords other tools ship as defaults, or that name this tool: never accepted.
KNOWN_PASSWORDS = frozenset({"smartmeter", "meterpipe", "password", "admin", "administrator", "12345678",
                             "123456789", "changeme", "raspberry", "qwertyui", "passw0rd"})


def password_problem(password: str) -> str | None:
    """Why ``password`` cannot be the web page's password, or None."""
    if len(password) < MIN_PASSWORD:
        return f"the password must have at least {MIN_PASSWORD} characters"
    if password.strip().lower() in KNOWN_PASSWORDS or password.strip().lower().startswith("meterpipe"):
        return "that password is a well-known default; choose another"
    return None


def csrf_token(secret: bytes, session: str) -> str:
    """The CSRF token of a session: an HMAC of its token, so it is checked without storing it."""
    return hmac.new(secret, b"csrf:" + session.encode(), hashlib.sha256).hexdigest()[:32]


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=HASH_BYTES, maxmem=64 * 2**20)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def check_password(stored: str, password: str) -> bool:
    """True when ``password`` matches the stored line; a malformed line matches nothing."""
    parts = stored.strip().split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return False
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, want = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
        if not (2 <= n <= 2**20 and 1 <= r <= 32 and 1 <= p <= 16 and want):
            return False
        got = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(want), maxmem=256 * 2**20)
    except ValueError:  # bad hex, or parameters scrypt refuses
        return False
    return hmac.compare_digest(got, want)


class PasswordFile:
    """The stored hash, re-read whenever the file changes (no restart needed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: tuple[int, int, int] | None = None
        self._stored: str | None = None
        self.generation = 0  # bumped on every change: sessions of an older one are void

    def stored(self) -> str | None:
        try:
            st = os.stat(self.path)
        except OSError:
            key = None
        else:
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if key != self._key:
            self._key = key
            self.generation += 1
            try:
                text = self.path.read_text().strip() if key is not None else ""
            except OSError:
                text = ""
            self._stored = text if text.startswith("scrypt$") else None
        return self._stored

    def exists(self) -> bool:
        return self.stored() is not None


@dataclass(slots=True)
class Sessions:
    """Server-side session store: token -> (expiry, password generation)."""

    ttl: float = SESSION_SECONDS
    limit: int = MAX_SESSIONS
    _tokens: dict[str, tuple[float, int]] = field(default_factory=dict, repr=False)  # never in a log line

    def create(self, generation: int, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        self._expire(now)
        while len(self._tokens) >= self.limit:  # oldest first (dicts keep insertion order)
            del self._tokens[next(iter(self._tokens))]
        token = secrets.token_urlsafe(32)
        self._tokens[token] = (now + self.ttl, generation)
        return token

    def valid(self, token: str | None, generation: int, now: float | None = None) -> bool:
        if not token:
            return False
        entry = self._tokens.get(token)
        now = time.monotonic() if now is None else now
        if entry is None:
            return False
        if entry[0] <= now or entry[1] != generation:
            del self._tokens[token]
            return False
        return True

    def drop(self, token: str | None) -> None:
        if token:
            self._tokens.pop(token, None)

    def _expire(self, now: float) -> None:
        for token in [t for t, (expiry, _) in self._tokens.items() if expiry <= now]:
            del self._tokens[token]


@dataclass(slots=True)
class LoginLimiter:
    """Failed logins in a sliding window: ``per_client`` per address, ``overall`` in total."""

    window: float = 900.0
    per_client: int = 5
    overall: int = 30
    _failures: deque[tuple[float, str]] = field(default_factory=deque)

    def reserve(self, client: str, now: float | None = None) -> tuple[float, str] | None:
        """Count an attempt as failed before checking it, so parallel attempts cannot pass the
        limit while their checks run: the entry to :meth:`release` on success, or None (and
        nothing counted) when ``client`` must wait."""
        now = time.monotonic() if now is None else now
        if self.retry_after(client, now) > 0:
            return None
        entry = (now, client)
        self._failures.append(entry)
        self._trim()
        return entry

    def release(self, entry: tuple[float, str]) -> None:
        """The reserved attempt was right after all: it does not count."""
        try:
            self._failures.remove(entry)
        except ValueError:  # already aged out of the window
            pass

    def retry_after(self, client: str, now: float | None = None) -> float:
        """0 when ``client`` may try now, else the seconds until it may."""
        now = time.monotonic() if now is None else now
        while self._failures and self._failures[0][0] <= now - self.window:
            self._failures.popleft()
        mine = [t for t, c in self._failures if c == client]
        if len(mine) >= self.per_client:
            return mine[-self.per_client] + self.window - now
        if len(self._failures) >= self.overall:
            return self._failures[-self.overall][0] + self.window - now
        return 0.0

    def failed(self, client: str, now: float | None = None) -> None:
        self._failures.append((time.monotonic() if now is None else now, client))
        self._trim()

    def _trim(self) -> None:
        while len(self._failures) > 10 * self.overall:
            self._failures.popleft()


def split_host(header: str) -> str:
    """``example:8080`` / ``[::1]:8080`` / ``::1`` -> the lower-case name without port."""
    host = header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


@functools.cache
def machine_names() -> frozenset[str]:
    """This machine's own names: its hostname, ``<hostname>.local`` (mDNS) and its FQDN."""
    names = set()
    for name in (socket.gethostname(), socket.getfqdn()):
        name = name.strip().lower().rstrip(".")
        if name and _ip(name) is None:
            names.add(name)
            names.add(name.split(".", 1)[0] + ".local")
    return frozenset(names)


def host_allowed(header: str | None, listen_host: str, extra: Iterable[str],
                 own: Iterable[str] | None = None) -> bool:
    """Is ``Host`` a name this server answers to? The listen address itself, any address
    when listening on all (0.0.0.0 / ::), the ``[web] hosts`` names, localhost names, and,
    off loopback, the machine's own names (``own``, default :func:`machine_names`). A name
    not listed is refused even if it resolves here: that is exactly what a DNS-rebinding
    page sends."""
    if not header:
        return False
    name = split_host(header)
    listen = ipaddress.ip_address(listen_host)
    if name in {h.lower().rstrip(".") for h in extra}:
        return True
    ip = _ip(name)
    if ip is not None:
        if listen.is_unspecified or ip == listen:
            return True
        return listen.is_loopback and ip.is_loopback
    if name in LOCAL_NAMES:
        return listen.is_loopback or listen.is_unspecified
    return not listen.is_loopback and name in (machine_names() if own is None else frozenset(own))


def origin_allowed(origin: str | None, host_header: str | None) -> bool:
    """A POST's ``Origin`` must be this very site (``http(s)://<Host>``); absent is fine
    (not a browser: a browser sends it on every POST)."""
    if origin is None:
        return True
    if not host_header:
        return False
    scheme, sep, rest = origin.partition("://")
    return bool(sep) and scheme in ("http", "https") and rest.lower() == host_header.strip().lower()
