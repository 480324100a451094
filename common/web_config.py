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


@dataclass(frozen=True, slots=True)
class TariffConfig:
    """``[web.tariff]``: prices for the cost views, applied at query time, never stored."""

    currency: str = "EUR"
    import_price: float | None = None  # per kWh, every import tariff register alike
    export_price: float | None = None  # per kWh fed in
    monthly_fee: float = 0.0


@dataclass(frozen=True, slots=True)
class WebConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    timezone: str = "UTC"  # IANA name; resolved from the system when not set
    hosts: tuple[str, ...] = ()  # extra Host header names accepted (DNS-rebinding check)
    password_file: Path = Path("data/web-password")  # scrypt hash, written by `meterpipe web set-password`
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
        import_price=s.number("import_price", 0.0) if s.has("import_price") else None,
        export_price=s.number("export_price", 0.0) if s.has("export_price") else None,
        monthly_fee=s.number("monthly_fee", d.monthly_fee),
    )
    s.raw("import_price")
    s.raw("export_price")
    s.finish()
    return config
