"""Configuration: one TOML file loaded into frozen dataclasses, validated at start.

Precedence: command line > file > defaults (defaults live in meterpipe.common.endpoints
and in the dataclass fields here). A bad value raises ConfigError naming the field
(``meters.house.key``) and the fix; process main()s turn it into exit code 2 and
one log line. Secrets (keys, passwords) are read here and never rendered: their
dataclass fields have ``repr=False``.

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

from dataclasses import dataclass, field
from pathlib import Path

from meterpipe.common.schema import LinkLayer


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
class EndpointsConfig:
    frames: str  # readers PUSH connect, decoder PULL binds
    readings: str  # decoder PUB binds, publishers and taps SUB connect
    # CurveZMQ for readers on other hosts (tcp frames endpoint); paths to key files
    curve_server_secret: Path | None = None
    curve_authorized_dir: Path | None = None


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

    def meter(self, name: str) -> MeterConfig:
        for m in self.meters:
            if m.name == name:
                return m
        from meterpipe.common.errors import ConfigError

        raise ConfigError("--meter", f"no meter named {name!r} in the config (have: "
                          + ", ".join(m.name for m in self.meters) + ")")
