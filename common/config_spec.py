"""What the settings page may edit: one :class:`FieldSpec` per setting, per table.

The loaders (:mod:`~meterpipe.common.config`, :mod:`~meterpipe.common.publisher_config`,
:mod:`~meterpipe.common.web_config`) stay the one judge of a value: the page turns a form
into a TOML table with :func:`form_value` and hands it to the same ``config_from_dict``
the processes start with. The specs here only say how to show a setting (label, help,
choices, unit) and take their defaults and choices from those modules, so the page,
``check-config`` and a process start cannot disagree. ``tests/common/test_config_spec.py``
checks that every spec names a setting the loader accepts and every setting the loader
accepts is either here or in :data:`NOT_IN_FORMS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from meterpipe.common.config import LINKS, MODELS, MeterConfig
from meterpipe.common.errors import ConfigError
from meterpipe.common.publisher_config import MQTT_LAYOUTS, CsvConfig, HistoryConfig, JournalConfig, MqttConfig
from meterpipe.common.web_config import DEFAULT_LISTEN, TariffConfig

KINDS = ("text", "int", "float", "bool", "choice", "secret", "path")


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str  # the TOML key
    kind: str  # one of KINDS
    label: str
    default: object = None  # shown as the placeholder; None: no default
    help: str = ""
    choices: tuple[str, ...] = ()  # for "choice"; "" first means "not set"
    unit: str = ""
    secret: str = ""  # "key" (32 hex digits) or "password", for kind "secret"
    required: bool = False


@dataclass(frozen=True, slots=True)
class TableSpec:
    path: str  # dotted TOML path: "publishers.mqtt"; "meters" for each [[meters]] table
    title: str
    fields: tuple[FieldSpec, ...]
    restarts: str  # what a change restarts, in words

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


_M = MeterConfig("", "")
_Q = MqttConfig()
_C = CsvConfig()
_H = HistoryConfig()
_J = JournalConfig()
_T = TariffConfig()

METER = TableSpec("meters", "Meter", (
    FieldSpec("name", "text", "Name", help="used in topics, file names and the page: letters, digits, _ . -",
              required=True),
    FieldSpec("port", "text", "Port", required=True,
              help="a serial device (prefer /dev/serial/by-id/...), socket://host:port or rfc2217://host:port"),
    FieldSpec("baudrate", "int", "Baud rate", _M.baudrate, "L+G CII: 2400; Kamstrup, Aidon: 2400; DSMR P1: 115200",
              unit="baud"),
    FieldSpec("parity", "choice", "Parity", _M.parity, "L+G E450/E570/E360: E; most others: N",
              choices=("N", "E", "O")),
    FieldSpec("bytesize", "choice", "Data bits", str(_M.bytesize), choices=("8", "7")),
    FieldSpec("stopbits", "choice", "Stop bits", f"{_M.stopbits:g}", choices=("1", "1.5", "2")),
    FieldSpec("link", "choice", "Link layer", _M.link.value,
              "hdlc, mbus, dsmr (P1 text telegrams) or auto (HDLC or M-Bus, found from the bytes)",
              choices=tuple(LINKS)),
    FieldSpec("model", "choice", "Model", "", "needed where the push does not say: the L+G E450, E570 and E360 "
              "scale differently", choices=("", *MODELS)),
    FieldSpec("key", "secret", "Encryption key", help="32 hex digits from the grid operator; kept in a file "
              "of its own (mode 0600), never shown again", secret="key"),
    FieldSpec("auth_key", "secret", "Authentication key", help="optional: 32 hex digits; the GCM tag is "
              "checked with it", secret="key"),
    FieldSpec("push_interval", "float", "Push interval", f"{_M.push_interval:g}",
              "how often the meter pushes; silence for 3 intervals is reported", unit="s"),
), "its reader (and the decoder re-reads its meters)")

MQTT = TableSpec("publishers.mqtt", "MQTT", (
    FieldSpec("enabled", "bool", "Publish to MQTT", _Q.enabled),
    FieldSpec("host", "text", "Broker host", _Q.host),
    FieldSpec("port", "int", "Broker port", _Q.port, "1883; 8883 with TLS"),
    FieldSpec("username", "text", "User name"),
    FieldSpec("password", "secret", "Password", help="kept in a file of its own (mode 0600), never shown again",
              secret="password"),
    FieldSpec("tls", "bool", "TLS", _Q.tls),
    FieldSpec("ca_file", "path", "CA certificate", help="PEM file of the CA that signed the broker's certificate "
              "(upload one below or give a path)"),
    FieldSpec("base_topic", "text", "Base topic", _Q.base_topic),
    FieldSpec("layout", "choice", "Topic layout", _Q.layout, "meterpipe: one JSON message per push; "
              "smartmeter-datacollector: that tool's topics", choices=MQTT_LAYOUTS),
    FieldSpec("discovery", "bool", "Home Assistant discovery", _Q.discovery),
    FieldSpec("discovery_prefix", "text", "Discovery prefix", _Q.discovery_prefix),
    FieldSpec("qos", "choice", "QoS", str(_Q.qos), choices=("0", "1", "2")),
    FieldSpec("retain", "bool", "Retain", _Q.retain),
), "the MQTT publisher")

CSV = TableSpec("publishers.csv", "CSV files", (
    FieldSpec("enabled", "bool", "Write CSV files", _C.enabled),
    FieldSpec("directory", "path", "Directory", str(_C.directory), "relative paths are beside meterpipe.toml"),
    FieldSpec("retention_days", "int", "Keep days", None, "empty: keep every file", unit="days"),
), "the CSV publisher")

JOURNAL = TableSpec("publishers.journal", "Journal", (
    FieldSpec("enabled", "bool", "Log every push to the systemd journal", _J.enabled),
), "the journal publisher")

HISTORY = TableSpec("publishers.history", "History", (
    FieldSpec("enabled", "bool", "Keep a history database", _H.enabled),
    FieldSpec("minute_retention_days", "int", "Keep minute rows", _H.minute_retention_days,
              "quarter-hour, hour and day rows are kept for ever", unit="days"),
    FieldSpec("recent_hours", "int", "Every push for", _H.recent_hours, "the Live view's full resolution",
              unit="hours"),
), "the history publisher")

WEB = TableSpec("web", "Web page", (
    FieldSpec("listen", "text", "Listen address", DEFAULT_LISTEN, "127.0.0.1:8080 for this machine only; "
              "0.0.0.0:8080 for the whole network (sign-in needed then)"),
    FieldSpec("timezone", "text", "Time zone", None, "IANA name (Europe/Zurich); empty: the system's"),
    FieldSpec("secure_cookie", "bool", "Secure cookie", False, "on behind a TLS reverse proxy"),
), "the web page (it restarts after answering)")

TARIFF = TableSpec("web.tariff", "Tariff", (
    FieldSpec("currency", "text", "Currency", _T.currency),
    FieldSpec("import_price", "float", "Import price", None, "per kWh", unit="/kWh"),
    FieldSpec("export_price", "float", "Export price", None, "per kWh fed in", unit="/kWh"),
    FieldSpec("monthly_fee", "float", "Monthly fee", _T.monthly_fee),
), "the web page")

SECTIONS: Mapping[str, TableSpec] = {
    "mqtt": MQTT, "csv": CSV, "journal": JOURNAL, "history": HISTORY, "web": WEB, "tariff": TARIFF,
}

# Settings the loaders accept that the page leaves to the file (advanced, or set once).
NOT_IN_FORMS: Mapping[str, tuple[str, ...]] = {
    "meters": ("queue_frames", "key_file", "key_env", "auth_key_file", "auth_key_env"),
    "publishers.mqtt": ("client_id", "keepalive", "cert_file", "key_file", "tls_insecure", "spool_path",
                        "spool_max_bytes", "password_file", "password_env"),
    "publishers.csv": (),
    "publishers.journal": ("socket",),
    "publishers.history": ("path",),
    "web": ("enabled", "hosts", "password_file", "tariff"),
    "web.tariff": ("registers", "time_of_use"),
}


def form_value(spec: FieldSpec, text: str, path: str) -> object:
    """The TOML value of one form field, or None for "not set" (the default applies).

    Only the shape is checked here (a number where a number goes); ranges and
    choices are the loader's, which names the field the same way."""
    field = f"{path}.{spec.name}"
    text = text.strip()
    if spec.kind == "bool":
        return text in ("on", "true", "1", "yes")
    if text == "":
        return None
    if spec.kind == "int" or (spec.kind == "choice" and spec.name in ("bytesize", "qos")):
        try:
            return int(text)
        except ValueError as exc:
            raise ConfigError(field, f"expected a whole number, got {text!r}") from exc
    if spec.kind == "float" or spec.name == "stopbits":
        try:
            value = float(text)
        except ValueError as exc:
            raise ConfigError(field, f"expected a number, got {text!r}") from exc
        return int(value) if value.is_integer() else value
    return text


def shown_value(spec: FieldSpec, value: object) -> str:
    """What a form field shows for a value of the file (never called for secrets)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "on" if value else ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
