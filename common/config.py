"""Configuration: one TOML file loaded into frozen dataclasses, validated at start.

Precedence: command line > file > defaults (defaults live in meterpipe.common.endpoints
and in the dataclass fields here). A bad value raises ConfigError naming the field
(``meters.house.key``) and the fix; process main()s turn it into exit code 2 and
one log line. Secrets (keys, passwords) are read here and never rendered: their
dataclass fields have ``repr=False``.

Entry points: :func:`load_config` reads the file (path argument, else
``$METERPIPE_CONFIG``, else ``./meterpipe.toml``); :func:`config_from_dict`
validates an already parsed table (tests call it directly). Unknown settings
are errors (with a "did you mean" hint); a file holding a secret inline while
readable by group or others only adds a line to ``Config.warnings``.

Example (the full reference lives in README.md):

    [[meters]]
    name = "house"
    port = "/dev/ttyUSB0"          # anything serial.serial_for_url opens
    baudrate = 2400
    parity = "N"                    # N, E, O
    link = "hdlc"                   # hdlc | mbus | auto
    key_file = "/etc/meterpipe/house.key"   # or key = "..." or key_env = "..."
    model = "e450"                  # optional hint: e450 e570 e360 am550 omnipower ...

    [endpoints]
    frames = "ipc:///run/meterpipe/frames"
    readings = "ipc:///run/meterpipe/readings"

    [publishers.csv]
    enabled = true
    directory = "/var/lib/meterpipe/csv"
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from meterpipe.common import endpoints as ep
from meterpipe.common.config_fields import Section, check_readable_file, loose_mode, type_name
from meterpipe.common.curve_keys import check_security
from meterpipe.common.endpoints import EndpointsConfig
from meterpipe.common.errors import ConfigError, SchemaError
from meterpipe.common.schema import LinkLayer, check_meter_name

DEFAULT_PATH = Path("meterpipe.toml")
CONFIG_ENV = "METERPIPE_CONFIG"


@dataclass(frozen=True, slots=True)
class MeterConfig:
    name: str
    port: str
    baudrate: int = 2400
    parity: str = "N"  # "N" | "E" | "O" (pyserial constants)
    bytesize: int = 8
    stopbits: float = 1  # 1 | 1.5 | 2
    link: LinkLayer = LinkLayer.AUTO
    key: bytes | None = field(default=None, repr=False)  # 16 bytes, from key / key_file / key_env
    auth_key: bytes | None = field(default=None, repr=False)
    model: str | None = None
    push_interval: float = 10.0  # seconds the meter is expected to push at (for "no data" status)
    queue_frames: int = 10_000  # reader's bounded queue while the decoder is away


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
class PublishersConfig:
    mqtt: MqttConfig = MqttConfig()
    csv: CsvConfig = CsvConfig()
    journal: JournalConfig = JournalConfig()


@dataclass(frozen=True, slots=True)
class Config:
    meters: tuple[MeterConfig, ...]
    endpoints: EndpointsConfig
    publishers: PublishersConfig = PublishersConfig()
    source: Path | None = None  # the file it came from
    warnings: tuple[str, ...] = ()  # problems worth a log line that do not stop the start

    def meter(self, name: str) -> MeterConfig:
        for m in self.meters:
            if m.name == name:
                return m
        from meterpipe.common.errors import ConfigError

        raise ConfigError("--meter", f"no meter named {name!r} in the config (have: "
                          + ", ".join(m.name for m in self.meters) + ")")


# --- loading ------------------------------------------------------------------

PARITIES: Mapping[str, str] = {"n": "N", "none": "N", "e": "E", "even": "E", "o": "O", "odd": "O"}
LINKS: Mapping[str, LinkLayer] = {k.value: k for k in (LinkLayer.HDLC, LinkLayer.MBUS, LinkLayer.DSMR, LinkLayer.AUTO)}
MODELS = ("e450", "e570", "e360", "am550", "omnipower", "kamstrup", "aidon", "kaifa", "sagemcom")
MQTT_LAYOUTS = ("meterpipe", "smartmeter-datacollector")
CURVE_SETTINGS = ("curve_server_secret", "curve_authorized_dir", "curve_server_public", "curve_client_secret")
_METER: Mapping[str, Any] = {f.name: f.default for f in fields(MeterConfig)}


def load_config(
    path: str | Path | None = None, *, environ: Mapping[str, str] | None = None
) -> Config:
    """Read and validate the config file: ``path``, else $METERPIPE_CONFIG, else ./meterpipe.toml."""
    env = os.environ if environ is None else environ
    if path is None or path == "":
        path = env.get(CONFIG_ENV) or DEFAULT_PATH
    source = Path(path).expanduser()
    where = str(source)
    try:
        with source.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(where, "config file not found; pass --config FILE or set "
                          f"${CONFIG_ENV}") from exc
    except IsADirectoryError as exc:
        raise ConfigError(where, "is a directory, not a config file") from exc
    except OSError as exc:
        raise ConfigError(where, f"cannot read config file: {exc.strerror or 'error'}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(where, "config file is not UTF-8 text") from exc
    except tomllib.TOMLDecodeError as exc:
        # tomllib's messages hold a position ("(at line 3, column 7)"), never the text
        raise ConfigError(where, f"not valid TOML: {exc}") from exc
    return config_from_dict(data, source=source.absolute(), environ=env)


def config_from_dict(
    data: Mapping[str, Any], *, source: Path | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Validate a parsed TOML document into a :class:`Config` (raises ConfigError)."""
    env = os.environ if environ is None else environ
    base = source.parent if source is not None else None
    top = Section("", data, base, env)
    meters = _meters(top)
    endpoints = _endpoints(top.sub("endpoints"), env, top.warnings)
    publishers = _publishers(top.sub("publishers"), base)
    top.finish()
    warnings = list(top.warnings)
    if source is not None and top.inline_secrets and loose_mode(source):
        warnings.append(
            f"config file {source} holds secrets inline ({', '.join(top.inline_secrets)}) "
            f"and is readable by group or others; run chmod 600 {source} or use key_file/key_env"
        )
    return Config(meters=meters, endpoints=endpoints, publishers=publishers, source=source,
                  warnings=tuple(warnings))


def _meters(top: Section) -> tuple[MeterConfig, ...]:
    raw = top.raw("meters")
    hint = 'add a [[meters]] table with at least name = "..." and port = "..."'
    if raw is None:
        raise ConfigError("meters", f"no meter configured; {hint}")
    if not isinstance(raw, list) or not all(isinstance(m, dict) for m in raw):
        raise ConfigError("meters", f"expected [[meters]] tables, got {type_name(raw)}; {hint}")
    if not raw:
        raise ConfigError("meters", f"no meter configured; {hint}")
    meters: list[MeterConfig] = []
    seen: dict[str, int] = {}
    for index, table in enumerate(raw):
        name = _meter_name(table, index)
        if name in seen:
            raise ConfigError(f"meters[{index}].name", f"duplicate meter name {name!r} (also "
                              f"meters[{seen[name]}]); give every meter its own name")
        seen[name] = index
        section = Section(f"meters.{name}", table, top.base, top.environ, top.warnings,
                          top.inline_secrets)
        meters.append(_meter(section, name))
    return tuple(meters)


def _meter_name(table: Mapping[str, Any], index: int) -> str:
    field_ = f"meters[{index}].name"
    value = table.get("name")
    nth = f"[[meters]] table number {index + 1}"
    if value is None:
        raise ConfigError(field_, f"missing in the {nth}; add name = \"house\" (letters, digits, _ . -)")
    if not isinstance(value, str):
        raise ConfigError(field_, f"expected quoted text, got {type_name(value)}")
    try:
        return check_meter_name(value)
    except SchemaError as exc:
        raise ConfigError(field_, f"{exc.message} ({nth})") from exc


def _meter(s: Section, name: str) -> MeterConfig:
    s.raw("name")
    port = s.required_text("port", 'set port = "/dev/ttyUSB0" (or socket://host:port, a pty path ...)')
    baudrate = s.integer("baudrate", _METER['baudrate'], low=1, unit=" baud")
    parity = s.choice("parity", _METER['parity'], PARITIES, "parity")
    bytesize = s.integer("bytesize", _METER['bytesize'], low=5, high=8)
    stopbits = s.number("stopbits", _METER['stopbits'])
    if stopbits not in (1, 1.5, 2):
        raise ConfigError(s.f("stopbits"), f"must be 1, 1.5 or 2, got {stopbits:g}")
    link = LINKS[s.choice("link", LinkLayer.AUTO.value, {k: k for k in LINKS}, "link layer")]
    model = s.choice("model", "", {m: m for m in MODELS}, "meter model") or None
    key, _ = s.secret("key", is_key=True)
    auth_key, auth_from = s.secret("auth_key", is_key=True)
    if auth_key is not None and key is None:
        raise ConfigError(s.f(auth_from or "auth_key"), "an authentication key needs an encryption "
                          "key as well; set key, key_file or key_env for this meter")
    push_interval = s.number("push_interval", _METER['push_interval'], unit=" seconds")
    queue_frames = s.integer("queue_frames", _METER['queue_frames'], low=1)
    s.finish()
    return MeterConfig(name=name, port=port, baudrate=baudrate, parity=parity, bytesize=bytesize,
                       stopbits=stopbits, link=link, key=key, auth_key=auth_key, model=model,
                       push_interval=push_interval, queue_frames=queue_frames)


def _endpoints(s: Section | None, env: Mapping[str, str], warnings: list[str]) -> EndpointsConfig:
    frames = readings = None
    curve: dict[str, Path | None] = dict.fromkeys(CURVE_SETTINGS)
    if s is not None:
        frames = s.text("frames")
        readings = s.text("readings")
        for name in CURVE_SETTINGS:
            curve[name] = s.path_value(name)
        s.finish()
    if frames is None or readings is None:
        defaults = ep.default_endpoints(environ=env)
        frames = frames if frames is not None else defaults.frames
        readings = readings if readings is not None else defaults.readings
    ep.check_endpoint(frames, "endpoints.frames")
    ep.check_endpoint(readings, "endpoints.readings")
    if frames == readings:
        raise ConfigError("endpoints.readings", "must differ from endpoints.frames")
    config = EndpointsConfig(frames=frames, readings=readings,
                             curve_server_secret=curve["curve_server_secret"],
                             curve_authorized_dir=curve["curve_authorized_dir"],
                             curve_server_public=curve["curve_server_public"],
                             curve_client_secret=curve["curve_client_secret"])
    check_security(config, warnings)
    return config


def _publishers(s: Section | None, base: Path | None) -> PublishersConfig:
    if s is None:
        return PublishersConfig(csv=_csv(None, base))
    config = PublishersConfig(mqtt=_mqtt(s.sub("mqtt")), csv=_csv(s.sub("csv"), base),
                              journal=_journal(s.sub("journal")))
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
