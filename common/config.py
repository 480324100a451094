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
from meterpipe.common.config_fields import Section, loose_mode, type_name
from meterpipe.common.curve_keys import check_security
from meterpipe.common.endpoints import EndpointsConfig
from meterpipe.common.errors import ConfigError, SchemaError
from meterpipe.common.publisher_config import PublishersConfig, publishers_config
from meterpipe.common.schema import LinkLayer, check_meter_name
from meterpipe.common.web_config import WebConfig, web_config

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
class Config:
    meters: tuple[MeterConfig, ...]
    endpoints: EndpointsConfig
    publishers: PublishersConfig = PublishersConfig()
    web: WebConfig = WebConfig()
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
PORT_SCHEMES = ("socket", "rfc2217")  # besides device paths: network serial bridges
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
    publishers = publishers_config(top.sub("publishers"), base)
    web = web_config(top.sub("web"), publishers.history.path.parent)
    top.finish()
    warnings = list(top.warnings)
    if source is not None and top.inline_secrets and loose_mode(source):
        warnings.append(
            f"config file {source} holds secrets inline ({', '.join(top.inline_secrets)}) "
            f"and is readable by group or others; run chmod 600 {source} or use key_file/key_env"
        )
    return Config(meters=meters, endpoints=endpoints, publishers=publishers, web=web, source=source,
                  warnings=tuple(warnings))


def _meters(top: Section) -> tuple[MeterConfig, ...]:
    raw = top.raw("meters")
    hint = 'add a [[meters]] table with at least name = "..." and port = "..."'
    if raw is None or raw == []:
        # A fresh install starts with none: the settings page adds them.
        top.warnings.append(f"no meter configured yet; add one on the settings page or {hint}")
        return ()
    if not isinstance(raw, list) or not all(isinstance(m, dict) for m in raw):
        raise ConfigError("meters", f"expected [[meters]] tables, got {type_name(raw)}; {hint}")
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
    scheme, sep, _ = port.partition("://")
    if sep and scheme.lower() not in PORT_SCHEMES:
        # pyserial also opens spy://, loop://, hwgrep:// ...: spy:// writes a log to any file it is given
        raise ConfigError(s.f("port"), f"{scheme}:// is not a meter port; use a device path (/dev/ttyUSB0), "
                          "socket://host:port or rfc2217://host:port")
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
