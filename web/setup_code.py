"""The one-time setup code: how the owner sets the first password in the browser.

While no password exists, ``meterpipe run`` (and the demo) writes a fresh code to its
log and to ``<password_file>.setup-code`` (mode 0600), so a Pi user without a shell
who can read the log (or the SD card) can finish the set-up. ``/setup`` takes the code
with a new password: it works once (the file is removed), expires
:data:`SETUP_SECONDS` after it was written, and every try counts against the sign-in
rate limit. There is no default password.
"""

from __future__ import annotations

import hmac
import secrets
import time
from pathlib import Path

from meterpipe.common.files import write_atomic

SETUP_SECONDS = 24 * 3600
ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read off a screen and typed
GROUPS = 3
GROUP_LETTERS = 4


def code_path(password_file: Path) -> Path:
    return password_file.with_name(password_file.name + ".setup-code")


def new_code(password_file: Path) -> str:
    """Write (replacing) a fresh code beside the password file and return it."""
    code = "-".join("".join(secrets.choice(ALPHABET) for _ in range(GROUP_LETTERS)) for _ in range(GROUPS))
    path = code_path(password_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, code + "\n", 0o600)
    return code


def _normal(text: str) -> str:
    return "".join(ch for ch in text.upper() if ch.isalnum())


def pending(password_file: Path, now: float | None = None) -> bool:
    """A code exists and has not expired."""
    try:
        written = code_path(password_file).stat().st_mtime
    except OSError:
        return False
    return (time.time() if now is None else now) - written < SETUP_SECONDS


def check_and_use(password_file: Path, given: object, now: float | None = None) -> bool:
    """True once for the right, unexpired code; the code is gone afterwards."""
    if not isinstance(given, str) or not pending(password_file, now):
        return False
    path = code_path(password_file)
    try:
        stored = path.read_text().strip()
    except OSError:
        return False
    if not stored or not hmac.compare_digest(_normal(stored).encode(), _normal(given).encode()):
        return False
    try:
        path.unlink()
    except FileNotFoundError:
        return False  # used by a parallel request a moment ago
    return True


def announce(password_file: Path, url: str) -> str | None:
    """For ``meterpipe run``: while no password is set, a fresh code and the line to log."""
    if password_file.exists():
        try:
            code_path(password_file).unlink()
        except FileNotFoundError:
            pass
        return None
    code = new_code(password_file)
    return (f"web page: no password set yet. Open {url}setup and enter the setup code {code} "
            f"(also in {code_path(password_file)}, valid 24 h, once), or run "
            "'meterpipe web set-password'")
