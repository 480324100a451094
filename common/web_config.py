"""The ``[web]`` section (and ``[web.tariff]``): the local web page and its time zone.

The time zone is shared with the history publisher: days and months of the
energy views are local calendar days (``zoneinfo``), so a DST change gives a
23- or 25-hour day. Default: the system's zone (``$TZ``, else ``/etc/localtime``).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from meterpipe.common.config_fields import Section
from meterpipe.common.errors import ConfigError

DEFAULT_LISTEN = "127.0.0.1:8080"


def system_zone_name() -> str:
    """The system's IANA zone name: ``$TZ``, else the target of ``/etc/localtime``, else UTC."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz and _zone_or_none(tz) is not None:
        return tz
    try:
        target = os.path.realpath("/etc/localtime")
    except OSError:
        return "UTC"
    marker = "zoneinfo/"
    if marker in target:
        name = target.split(marker, 1)[1]
        if _zone_or_none(name) is not None:
            return name
    try:
        name = Path("/etc/timezone").read_text().strip()
    except OSError:
        return "UTC"
    return name if name and _zone_or_none(name) is not None else "UTC"


def _zone_or_none(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def parse_listen(text: str, field_: str) -> tuple[str, int]:
    """``127.0.0.1:8080`` / ``[::1]:8080`` / ``0.0.0.0:80`` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(field_, f"{text!r} must be HOST:PORT, e.g. {DEFAULT_LISTEN} or 0.0.0.0:8080")
    host = host.removeprefix("[").removesuffix("]")
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise ConfigError(field_, f"{host!r} must be an IP address to listen on (127.0.0.1, 0.0.0.0, ::1, ...)") from exc
    return host, int(port)


def is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback


DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class TimeOfUse:
    """One row of ``[[web.tariff.time_of_use]]``: an import price on some weekdays between two
    local times (``start`` inclusive, ``end`` exclusive, minutes after midnight; end 1440 = 24:00)."""

    days: frozenset[int]  # 0 = Monday
    start: int
    end: int
    price: float

    def covers(self, weekday: int, minute: int) -> bool:
        return weekday in self.days and self.start <= minute < self.end


@dataclass(frozen=True, slots=True)
class TariffConfig:
    """``[web.tariff]``: prices for the cost views, applied at query time, never stored.

    The import price of an energy step is, first match wins: the price of the tariff
    register it was counted on (``[web.tariff.registers]``, e.g. ``t1 = 0.32``, for meters
    that count per tariff), the ``time_of_use`` row covering its local time, ``import_price``.
    """

    currency: str = "EUR"
    import_price: float | None = None  # per kWh, every import tariff register alike
    export_price: float | None = None  # per kWh fed in
    monthly_fee: float = 0.0
    register_prices: tuple[tuple[str, float], ...] = ()  # ("t1", 0.32): active_energy_import_t1
    time_of_use: tuple[TimeOfUse, ...] = ()

    @property
    def priced(self) -> bool:
        return bool(self.import_price is not None or self.register_prices or self.time_of_use
                    or self.export_price is not None or self.monthly_fee)


@dataclass(frozen=True, slots=True)
class WebConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    timezone: str = "UTC"  # IANA name; resolved from the system when not set
    hosts: tuple[str, ...] = ()  # extra Host header names accepted (DNS-rebinding check)
    password_file: Path = Path("data/web-password")  # scrypt hash, written by `meterpipe web set-password`
    secure_cookie: bool = False  # true: the session cookie is Secure (behind a TLS reverse proxy)
    tariff: TariffConfig = field(default_factory=TariffConfig)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def loopback_only(self) -> bool:
        return is_loopback(self.host)


def web_config(s: Section | None, data_dir: Path) -> WebConfig:
    """``data_dir`` is where the history database lives; the password file goes beside it."""
    default_password = data_dir / "web-password"
    if s is None:
        return WebConfig(timezone=system_zone_name(), password_file=default_password)
    host, port = parse_listen(s.text("listen", DEFAULT_LISTEN) or DEFAULT_LISTEN, s.f("listen"))
    zone = s.text("timezone")
    if zone is None:
        zone = system_zone_name()
    elif _zone_or_none(zone) is None:
        raise ConfigError(s.f("timezone"), f"unknown time zone {zone!r}; use an IANA name such as "
                          "Europe/Zurich or UTC")
    hosts = s.raw("hosts")
    if hosts is None:
        hosts = []
    if not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts):
        raise ConfigError(s.f("hosts"), 'expected a list of host names, e.g. ["meterpipe.local"]')
    config = WebConfig(
        enabled=s.boolean("enabled", True),
        host=host,
        port=port,
        timezone=zone,
        hosts=tuple(h.lower() for h in hosts),
        password_file=s.path_value("password_file", default_password) or default_password,
        secure_cookie=s.boolean("secure_cookie", False),
        tariff=_tariff(s.sub("tariff")),
    )
    s.finish()
    return config


def _tariff(s: Section | None) -> TariffConfig:
    d = TariffConfig()
    if s is None:
        return d
    config = TariffConfig(
        currency=s.text("currency", d.currency) or d.currency,
        import_price=s.number("import_price", 0.0, positive=False) if s.has("import_price") else None,
        export_price=s.number("export_price", 0.0, positive=False) if s.has("export_price") else None,
        monthly_fee=s.number("monthly_fee", d.monthly_fee, positive=False),
        register_prices=_register_prices(s.sub("registers")),
        time_of_use=_time_of_use(s),
    )
    s.raw("import_price")
    s.raw("export_price")
    s.finish()
    return config


def _register_prices(s: Section | None) -> tuple[tuple[str, float], ...]:
    if s is None:
        return ()
    prices = []
    for name in s.data:
        if not (len(name) == 2 and name[0] == "t" and name[1] in "1234"):
            raise ConfigError(s.f(name), "tariff registers are t1, t2, t3 or t4 (active_energy_import_t1, ...)")
        prices.append((name, s.number(name, 0.0, positive=False)))
    s.finish()
    return tuple(sorted(prices))


def _clock(text: object, field_: str) -> int:
    """``"07:30"`` -> 450; ``"24:00"`` -> 1440."""
    hour, sep, minute = str(text).partition(":") if isinstance(text, str) else ("", "", "")
    if not (sep and hour.isdigit() and minute.isdigit() and len(minute) == 2):
        raise ConfigError(field_, f'expected a local time "HH:MM", e.g. "07:00", got {text!r}')
    value = int(hour) * 60 + int(minute)
    if int(minute) > 59 or value > 1440:
        raise ConfigError(field_, f"{text!r} is not a time between 00:00 and 24:00")
    return value


def _days(value: object, field_: str) -> frozenset[int]:
    """``["mon", "tue"]`` or ``"mon-fri"`` or ``"sat,sun"`` -> weekday numbers."""
    items = value if isinstance(value, list) else str(value).split(",") if isinstance(value, str) else None
    if not items:
        raise ConfigError(field_, 'expected weekdays, e.g. "mon-fri" or ["sat", "sun"]')
    days: set[int] = set()
    for item in items:
        first, _, last = str(item).strip().lower().partition("-")
        try:
            a = DAY_NAMES.index(first)
            b = DAY_NAMES.index(last) if last else a
        except ValueError as exc:
            raise ConfigError(field_, f"unknown weekday in {item!r}; use {', '.join(DAY_NAMES)}") from exc
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return frozenset(days)


def _time_of_use(s: Section) -> tuple[TimeOfUse, ...]:
    rows = s.raw("time_of_use")
    if rows is None:
        return ()
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ConfigError(s.f("time_of_use"), "expected [[web.tariff.time_of_use]] tables")
    found = []
    for i, row in enumerate(rows):
        r = Section(f"{s.f('time_of_use')}[{i}]", row, s.base, s.environ, s.warnings, s.inline_secrets)
        start = _clock(r.raw("start") if r.has("start") else "00:00", r.f("start"))
        end = _clock(r.raw("end") if r.has("end") else "24:00", r.f("end"))
        if end <= start:
            raise ConfigError(r.f("end"), "must be after start (split a row that runs past midnight in two)")
        days = _days(r.raw("days") if r.has("days") else "mon-sun", r.f("days"))
        if not r.has("price"):
            raise ConfigError(r.f("price"), "missing; the import price per kWh for this time")
        found.append(TimeOfUse(days, start, end, r.number("price", 0.0, positive=False)))
        r.finish()
    return tuple(found)
