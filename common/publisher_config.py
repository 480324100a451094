"""The ``[publishers.*]`` sections of the config: one frozen dataclass and one parser each.

Adding a publisher adds its section here: a dataclass with its defaults, a field
in :class:`PublishersConfig`, and a parser wired into :func:`publishers_config`.
Every section has ``enabled``; the program table (deploy/programs.py) reads it
to decide whether supervisord starts the publisher.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from meterpipe.common.config_fields import Section, check_readable_file
from meterpipe.common.errors import ConfigError

MQTT_LAYOUTS = ("meterpipe", "smartmeter-datacollector")


@dataclass(frozen=True, slots=True)
class MqttConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = "meterpipe"
    keepalive: int = 60
    qos: int = 1
    retain: bool = False
    base_topic: str = "meterpipe"
    layout: str = "meterpipe"  # "meterpipe" | "smartmeter-datacollector"
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # from password / password_file / password_env
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_insecure: bool = False
    spool_path: Path | None = None
    spool_max_bytes: int = 50 * 1024 * 1024
    discovery: bool = True
    discovery_prefix: str = "homeassistant"


@dataclass(frozen=True, slots=True)
class CsvConfig:
    enabled: bool = True
    directory: Path = Path("data/csv")
    retention_days: int | None = None


@dataclass(frozen=True, slots=True)
class JournalConfig:
    enabled: bool = False
    socket: Path = Path("/run/systemd/journal/socket")


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    enabled: bool = True
    path: Path = Path("data/history.sqlite")  # default: beside the CSV directory
    minute_retention_days: int = 400  # quarter-hour, hour and day rows are kept forever
    recent_hours: int = 48  # every push at full resolution (the Live view), then only minute rows


@dataclass(frozen=True, slots=True)
class PublishersConfig:
    mqtt: MqttConfig = MqttConfig()
    csv: CsvConfig = CsvConfig()
    journal: JournalConfig = JournalConfig()
    history: HistoryConfig = HistoryConfig()


def publishers_config(s: Section | None, base: Path | None) -> PublishersConfig:
    if s is None:
        csv = _csv(None, base)
        return PublishersConfig(csv=csv, history=_history(None, csv))
    csv = _csv(s.sub("csv"), base)
    config = PublishersConfig(mqtt=_mqtt(s.sub("mqtt")), csv=csv, journal=_journal(s.sub("journal")),
                              history=_history(s.sub("history"), csv))
    s.finish()
    return config


def _mqtt(s: Section | None) -> MqttConfig:
    if s is None:
        return MqttConfig()
    d = MqttConfig()
    password, password_from = s.secret("password", is_key=False)
    username = s.text("username")
    if password is not None and username is None:
        raise ConfigError(s.f(password_from or "password"), "a password needs a username; set "
                          "publishers.mqtt.username")
    tls_files = {}
    for name in ("ca_file", "cert_file", "key_file"):
        path = s.path_value(name)
        tls_files[name] = check_readable_file(path, s.f(name)) if path is not None else None
    config = MqttConfig(
        enabled=s.boolean("enabled", d.enabled),
        host=s.text("host", d.host) or d.host,
        port=s.integer("port", d.port, low=1, high=65535),
        client_id=s.text("client_id", d.client_id) or d.client_id,
        keepalive=s.integer("keepalive", d.keepalive, low=1, unit=" seconds"),
        qos=s.integer("qos", d.qos, low=0, high=2),
        retain=s.boolean("retain", d.retain),
        base_topic=_topic(s, "base_topic", d.base_topic),
        layout=s.choice("layout", d.layout, {m: m for m in MQTT_LAYOUTS}, "layout"),
        username=username,
        password=password.decode("utf-8") if password is not None else None,
        tls=s.boolean("tls", d.tls),
        ca_file=tls_files["ca_file"],
        cert_file=tls_files["cert_file"],
        key_file=tls_files["key_file"],
        tls_insecure=s.boolean("tls_insecure", d.tls_insecure),
        spool_path=s.path_value("spool_path"),
        spool_max_bytes=s.integer("spool_max_bytes", d.spool_max_bytes, low=1, unit=" bytes"),
        discovery=s.boolean("discovery", d.discovery),
        discovery_prefix=_topic(s, "discovery_prefix", d.discovery_prefix),
    )
    s.finish()
    return config


def _topic(s: Section, name: str, default: str) -> str:
    value = s.text(name, default) or default
    if "+" in value or "#" in value or value.startswith("/") or value.endswith("/"):
        raise ConfigError(s.f(name), f"{value!r} must be a plain topic prefix: no + or #, "
                          "no leading or trailing /")
    return value


def _csv(s: Section | None, base: Path | None) -> CsvConfig:
    d = CsvConfig()
    if s is None:
        directory = d.directory if base is None or d.directory.is_absolute() else base / d.directory
        return CsvConfig(directory=directory)
    retention = s.integer("retention_days", 0, low=1, unit=" days") if s.has("retention_days") else None
    s.raw("retention_days")
    config = CsvConfig(enabled=s.boolean("enabled", d.enabled),
                       directory=s.path_value("directory", d.directory) or d.directory,
                       retention_days=retention)
    s.finish()
    return config


def _journal(s: Section | None) -> JournalConfig:
    d = JournalConfig()
    if s is None:
        return d
    config = JournalConfig(enabled=s.boolean("enabled", d.enabled),
                           socket=s.path_value("socket", d.socket) or d.socket)
    s.finish()
    return config


def _history(s: Section | None, csv: CsvConfig) -> HistoryConfig:
    d = HistoryConfig()
    beside_csv = csv.directory.parent / "history.sqlite"
    if s is None:
        return HistoryConfig(path=beside_csv)
    config = HistoryConfig(
        enabled=s.boolean("enabled", d.enabled),
        path=s.path_value("path", beside_csv) or beside_csv,
        minute_retention_days=s.integer("minute_retention_days", d.minute_retention_days, low=1, unit=" days"),
        recent_hours=s.integer("recent_hours", d.recent_hours, low=1, high=24 * 31, unit=" hours"),
    )
    s.finish()
    return config
