"""Typed readers for one TOML table, used by meterpipe.common.config.

A :class:`Section` wraps one table with its dotted path (``meters.house``) and
hands out typed, checked values; every failure is a ``ConfigError`` naming the
full field path and the fix, in one line. Secrets (meter keys, passwords) are
read by :meth:`Section.secret`, whose messages never contain the value or any
part of it: at most how many hex digits it has, or a fingerprint.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meterpipe.common.errors import ConfigError

KEY_BYTES = 16
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def type_name(value: object) -> str:
    """How TOML would call the type of ``value`` (never the value itself)."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


def unknown_setting(path: str, name: str, known: Sequence[str]) -> ConfigError:
    """``unknown setting; did you mean baudrate?`` for ``meters.house.baudrat``."""
    import difflib  # only for a config error: every process loads the config, few get one

    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        hint = f"did you mean {close[0]}?"
    else:
        hint = "valid settings here: " + ", ".join(sorted(known))
    return ConfigError(join(path, name), f"unknown setting; {hint}")


def join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def parse_key(text: str, field: str, what: str) -> bytes:
    """32 hex digits (spaces, colons and a leading 0x tolerated) -> 16 bytes.

    ``what`` says where the text came from ("the key", "$METER_KEY"); the
    message never shows the text itself.
    """
    cleaned = text.strip()
    if cleaned[:2] in ("0x", "0X"):
        cleaned = cleaned[2:]
    cleaned = "".join(ch for ch in cleaned if ch not in " \t:")
    bad = sum(1 for ch in cleaned if ch not in _HEX_DIGITS)
    if bad:
        raise ConfigError(
            field,
            f"{what} contains {bad} character(s) that are not hex digits; "
            f"write the {KEY_BYTES}-byte key as {2 * KEY_BYTES} hex digits (0-9, a-f)",
        )
    if len(cleaned) != 2 * KEY_BYTES:
        raise ConfigError(
            field,
            f"{what} has {len(cleaned)} hex digits, a key needs exactly {2 * KEY_BYTES} "
            f"({KEY_BYTES} bytes); check it was copied whole",
        )
    return bytes.fromhex(cleaned)


def loose_mode(path: Path) -> bool:
    """True when ``path`` is readable by group or others."""
    try:
        return bool(stat.S_IMODE(path.stat().st_mode) & 0o044)
    except OSError:
        return False


@dataclass
class Section:
    """One TOML table being read; tracks which settings were consumed."""

    path: str  # dotted path of this table, "" for the top level
    data: Mapping[str, Any]
    base: Path | None  # folder that relative paths resolve against
    environ: Mapping[str, str]
    warnings: list[str] = field(default_factory=list)
    inline_secrets: list[str] = field(default_factory=list)
    _used: set[str] = field(default_factory=set)

    # --- plumbing -------------------------------------------------------

    def f(self, name: str) -> str:
        return join(self.path, name)

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str) -> Any:
        self._used.add(name)
        return self.data.get(name)

    def sub(self, name: str, path: str | None = None) -> Section | None:
        """The sub-table ``name`` as a Section, or None when absent."""
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ConfigError(self.f(name), f"expected a table [{self.f(name)}], got {type_name(value)}")
        return Section(path if path is not None else self.f(name), value, self.base, self.environ,
                       self.warnings, self.inline_secrets)

    def finish(self) -> None:
        """Raise for the first setting that no reader asked for (a typo)."""
        for name in self.data:
            if name not in self._used:
                raise unknown_setting(self.path, name, sorted(self._used))

    # --- typed values ---------------------------------------------------

    def text(self, name: str, default: str | None = None, *, empty_ok: bool = False) -> str | None:
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, str):
            raise ConfigError(self.f(name), f"expected quoted text, got {type_name(value)}")
        if not empty_ok and not value.strip():
            raise ConfigError(self.f(name), "must not be empty")
        return value

    def required_text(self, name: str, hint: str) -> str:
        value = self.text(name)
        if value is None:
            raise ConfigError(self.f(name), f"missing; {hint}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self.f(name), f"expected true or false (no quotes), got {type_name(value)}")
        return value

    def integer(self, name: str, default: int, *, low: int | None = None, high: int | None = None,
                unit: str = "") -> int:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.f(name), f"expected a whole number (no quotes), got {type_name(value)}")
        self._range(name, value, low, high, unit)
        return value

    def number(self, name: str, default: float, *, positive: bool = True, unit: str = "") -> float:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(self.f(name), f"expected a number (no quotes), got {type_name(value)}")
        if positive and not value > 0:  # also rejects nan
            raise ConfigError(self.f(name), f"must be greater than 0{unit}, got {value}")
        if value == float("inf"):
            raise ConfigError(self.f(name), "must be finite")
        return float(value)

    def _range(self, name: str, value: int, low: int | None, high: int | None, unit: str) -> None:
        if low is not None and high is not None and not low <= value <= high:
            raise ConfigError(self.f(name), f"must be between {low} and {high}{unit}, got {value}")
        if low is not None and value < low:
            raise ConfigError(self.f(name), f"must be at least {low}{unit}, got {value}")

    def choice(self, name: str, default: str, choices: Mapping[str, str], what: str) -> str:
        """Case-insensitive choice; ``choices`` maps accepted spellings to stored values."""
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, str):
            raise ConfigError(self.f(name), f"expected quoted text, got {type_name(value)}")
        found = choices.get(value.lower())
        if found is None:
            shown = sorted(set(choices.values()))
            raise ConfigError(self.f(name), f"unknown {what} {value!r}; use one of: {', '.join(shown)}")
        return found

    def path_value(self, name: str, default: Path | None = None) -> Path | None:
        """A path; relative paths resolve against the config file's folder."""
        value = self.text(name)
        if value is None:
            return self.resolve(default) if default is not None else None
        return self.resolve(Path(value))

    def resolve(self, path: Path) -> Path:
        path = path.expanduser()
        if not path.is_absolute() and self.base is not None:
            path = self.base / path
        return path

    # --- secrets ----------------------------------------------------------

    def secret(self, name: str, *, is_key: bool) -> tuple[bytes | None, str | None]:
        """Read ``name`` / ``name_file`` / ``name_env`` (at most one).

        Returns (value, the setting it came from) or (None, None). Keys are parsed
        into 16 bytes; passwords are returned UTF-8 encoded. Messages never show
        the value.
        """
        names = (name, f"{name}_file", f"{name}_env")
        self._used.update(names)
        given = [n for n in names if self.has(n)]
        if not given:
            return None, None
        if len(given) > 1:
            raise ConfigError(self.f(given[1]), f"set only one of {', '.join(given)}")
        source = given[0]
        field_ = self.f(source)
        value = self.data[source]
        if not isinstance(value, str):
            raise ConfigError(field_, f"expected quoted text, got {type_name(value)}")
        if source == name:
            self.inline_secrets.append(field_)
            return self._secret_text(value, field_, f"the {name.replace('_', ' ')}", is_key), source
        if source.endswith("_env"):
            if not value:
                raise ConfigError(field_, "must name an environment variable")
            if value not in self.environ:
                raise ConfigError(field_, f"environment variable {value} is not set; export it "
                                  "or use another way to give the secret")
            return self._secret_text(self.environ[value], field_, f"${value}", is_key), source
        return self._secret_file(self.resolve(Path(value)), field_, is_key), source

    @staticmethod
    def _secret_text(text: str, field_: str, what: str, is_key: bool) -> bytes:
        if is_key:
            return parse_key(text, field_, what)
        if not text.strip():
            raise ConfigError(field_, f"{what} is empty")
        return text.encode("utf-8")

    def _secret_file(self, path: Path, field_: str, is_key: bool) -> bytes:
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise ConfigError(field_, f"file {path} does not exist; create it or fix the path") from exc
        except OSError as exc:
            raise ConfigError(field_, f"cannot read {path}: {exc.strerror or 'error'}") from exc
        if loose_mode(path):
            self.warnings.append(f"{field_}: {path} is readable by group or others; "
                                 f"run chmod 600 {path}")
        what = f"the file {path}"
        if not is_key:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ConfigError(field_, f"{what} is not UTF-8 text") from exc
            return self._secret_text(text.rstrip("\r\n"), field_, what, is_key)
        try:
            return parse_key(data.decode("ascii"), field_, what)
        except (ConfigError, UnicodeDecodeError) as exc:
            if len(data) == KEY_BYTES:
                return data  # 16 raw bytes
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(field_, f"{what} holds neither {2 * KEY_BYTES} hex digits nor "
                              f"exactly {KEY_BYTES} raw bytes (it has {len(data)} bytes)") from exc


def check_readable_file(path: Path, field: str) -> Path:
    """For TLS files: fail early when the file is missing."""
    if not os.path.isfile(path):
        raise ConfigError(field, f"file {path} does not exist; fix the path")
    return path
