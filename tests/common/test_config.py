"""meterpipe.common.config: loading, every validation branch, and no secret in any message."""

from __future__ import annotations

import textwrap
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from meterpipe.common.config import Config, config_from_dict, load_config
from meterpipe.common.errors import ConfigError
from meterpipe.common.schema import LinkLayer

KEY = "00112233445566778899AABBCCDDEEFF"
AUTH = "A1B2C3D4E5F60718293A4B5C6D7E8F90"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"METERPIPE_RUNTIME_DIR": str(tmp_path / "rt"), **extra}


def _write(tmp_path: Path, text: str, mode: int = 0o600, name: str = "meterpipe.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    path.chmod(mode)
    return path


def _load(tmp_path: Path, text: str, *, mode: int = 0o600, env: dict[str, str] | None = None) -> Config:
    return load_config(_write(tmp_path, text, mode), environ=_env(tmp_path, **(env or {})))


def _error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text, env=env)
    return info.value


def assert_no_secret(message: str, *secrets: str) -> None:
    """No secret, nor any 8-digit run of it, in either case."""
    low = message.lower()
    for secret in secrets:
        s = secret.lower()
        for i in range(len(s) - 7):
            assert s[i:i + 8] not in low, f"secret fragment leaked into: {message}"


METER = '[[meters]]\nname = "house"\nport = "/dev/ttyUSB0"\n'


# --- valid configs -------------------------------------------------------------


def test_full_config_loads_with_the_right_types(tmp_path: Path) -> None:
    (tmp_path / "auth.key").write_text(AUTH.lower() + "\n")
    (tmp_path / "auth.key").chmod(0o600)
    (tmp_path / "ca.pem").write_text("not checked here\n")
    config = _load(tmp_path, f"""
        [[meters]]
        name = "house"
        port = "socket://127.0.0.1:4001"
        baudrate = 115200
        parity = "even"
        bytesize = 7
        stopbits = 1.5
        link = "HDLC"
        key = "{KEY}"
        auth_key_file = "auth.key"
        model = "AM550"
        push_interval = 5
        queue_frames = 20

        [[meters]]
        name = "garage.2"
        port = "/dev/ttyAMA0"
        link = "mbus"

        [endpoints]
        frames = "tcp://127.0.0.1:5555"
        readings = "ipc:///tmp/mp-test/readings"

        [publishers.mqtt]
        enabled = true
        host = "broker.lan"
        port = 8883
        qos = 2
        retain = true
        username = "meter"
        password_env = "MQTT_PW"
        tls = true
        ca_file = "ca.pem"
        layout = "smartmeter-datacollector"
        spool_path = "spool"

        [publishers.csv]
        enabled = false
        directory = "csv"
        retention_days = 30

        [publishers.journal]
        enabled = true
        """, env={"MQTT_PW": "s3cret-pw"})
    house, garage = config.meters
    assert house.name == "house" and house.port == "socket://127.0.0.1:4001"
    assert house.baudrate == 115200 and isinstance(house.baudrate, int)
    assert (house.parity, house.bytesize, house.stopbits) == ("E", 7, 1.5)
    assert house.link is LinkLayer.HDLC
    assert house.key == bytes.fromhex(KEY) and house.auth_key == bytes.fromhex(AUTH)
    assert house.model == "am550"
    assert house.push_interval == 5.0 and isinstance(house.push_interval, float)
    assert house.queue_frames == 20
    assert garage.link is LinkLayer.MBUS and garage.key is None and garage.model is None
    assert (garage.baudrate, garage.parity, garage.stopbits) == (2400, "N", 1.0)
    assert config.endpoints.frames == "tcp://127.0.0.1:5555"
    assert config.endpoints.readings == "ipc:///tmp/mp-test/readings"
    mqtt = config.publishers.mqtt
    assert (mqtt.enabled, mqtt.host, mqtt.port, mqtt.qos, mqtt.retain) == (True, "broker.lan", 8883, 2, True)
    assert (mqtt.username, mqtt.password, mqtt.tls) == ("meter", "s3cret-pw", True)
    assert mqtt.ca_file == tmp_path / "ca.pem" and mqtt.spool_path == tmp_path / "spool"
    assert mqtt.layout == "smartmeter-datacollector"
    assert config.publishers.csv.enabled is False
    assert config.publishers.csv.directory == tmp_path / "csv"
    assert config.publishers.csv.retention_days == 30
    assert config.publishers.journal.enabled is True
    assert config.source == tmp_path / "meterpipe.toml"
    assert config.warnings == ()
    assert KEY.lower() not in repr(config).lower() and "s3cret" not in repr(config)


def test_minimal_config_takes_defaults(tmp_path: Path) -> None:
    config = _load(tmp_path, METER)
    (meter,) = config.meters
    assert (meter.baudrate, meter.parity, meter.bytesize, meter.stopbits) == (2400, "N", 8, 1.0)
    assert meter.link is LinkLayer.AUTO and meter.key is None and meter.auth_key is None
    rt = tmp_path / "rt"
    assert config.endpoints.frames == f"ipc://{rt}/frames"
    assert config.endpoints.readings == f"ipc://{rt}/readings"
    assert (rt.stat().st_mode & 0o777) == 0o700
    assert config.publishers.mqtt.enabled is False
    assert config.publishers.csv.directory == tmp_path / "data" / "csv"
    assert config.publishers.journal.enabled is False


def test_relative_csv_directory_resolves_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    monkeypatch.chdir(tmp_path)
    path = _write(conf_dir, METER + '[publishers.csv]\ndirectory = "../var/csv"\n')
    config = load_config(path, environ=_env(tmp_path))
    assert config.publishers.csv.directory == conf_dir / "../var/csv"
    absolute = _write(conf_dir, METER + '[publishers.csv]\ndirectory = "/srv/csv"\n')
    assert load_config(absolute, environ=_env(tmp_path)).publishers.csv.directory == Path("/srv/csv")


@pytest.mark.parametrize("text", ["N", "n", "none", "NONE", "E", "even", "Even", "O", "odd"])
def test_parity_spellings(tmp_path: Path, text: str) -> None:
    config = _load(tmp_path, METER + f'parity = "{text}"\n')
    assert config.meters[0].parity == text[0].upper()


@pytest.mark.parametrize("text", [
    KEY, KEY.lower(), "0x" + KEY, "0X" + KEY.lower(),
    " ".join(KEY[i:i + 2] for i in range(0, 32, 2)),
    ":".join(KEY[i:i + 2] for i in range(0, 32, 2)),
    "  " + KEY + "  ",
], ids=["upper", "lower", "0x", "0X", "spaces", "colons", "padded"])
def test_key_spellings(tmp_path: Path, text: str) -> None:
    config = _load(tmp_path, METER + f'key = "{text}"\n')
    assert config.meters[0].key == bytes.fromhex(KEY)


def test_key_env_and_key_files(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "hex.key").write_text(KEY + "\n")
    (keys / "raw.key").write_bytes(bytes.fromhex(AUTH))
    for f in keys.iterdir():
        f.chmod(0o600)
    config = _load(tmp_path, f"""
        [[meters]]
        name = "a"
        port = "/dev/a"
        key_env = "A_KEY"
        [[meters]]
        name = "b"
        port = "/dev/b"
        key_file = "keys/hex.key"
        auth_key_file = "{keys / 'raw.key'}"
        """, env={"A_KEY": AUTH.lower()})
    a, b = config.meters
    assert a.key == bytes.fromhex(AUTH)
    assert b.key == bytes.fromhex(KEY) and b.auth_key == bytes.fromhex(AUTH)
    assert config.warnings == ()


def test_password_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("hunter22\n")
    (tmp_path / "pw").chmod(0o600)
    config = _load(tmp_path, METER + '[publishers.mqtt]\nusername = "u"\npassword_file = "pw"\n')
    assert config.publishers.mqtt.password == "hunter22"


def test_config_from_dict_without_source(tmp_path: Path) -> None:
    data = {"meters": [{"name": "m", "port": "/dev/x"}], "publishers": {"csv": {"directory": "rel"}}}
    config = config_from_dict(data, source=None, environ=_env(tmp_path))
    assert config.source is None and config.publishers.csv.directory == Path("rel")


# --- file level ------------------------------------------------------------------


def test_path_from_environment_then_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = _write(tmp_path, METER.replace("house", "from_env"), name="other.toml")
    assert load_config(environ=_env(tmp_path, METERPIPE_CONFIG=str(other))).meters[0].name == "from_env"
    _write(tmp_path, METER)
    monkeypatch.chdir(tmp_path)
    config = load_config(environ=_env(tmp_path))
    assert config.meters[0].name == "house" and config.source == tmp_path / "meterpipe.toml"


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml", environ=_env(tmp_path))
    assert str(tmp_path / "nope.toml") in str(info.value)
    assert "METERPIPE_CONFIG" in str(info.value)


def test_toml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    err = _error(tmp_path, METER + f'key = "{KEY}"\nbaudrate = = 9600\n')
    assert "line 5" in str(err) and "not valid TOML" in str(err)
    assert_no_secret(str(err), KEY)


def test_directory_and_binary_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="directory"):
        load_config(tmp_path, environ=_env(tmp_path))
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b'name = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(bad, environ=_env(tmp_path))


# --- warnings -------------------------------------------------------------------------


def test_world_readable_config_with_inline_key_warns(tmp_path: Path) -> None:
    config = _load(tmp_path, METER + f'key = "{KEY}"\n', mode=0o644)
    (warning,) = config.warnings
    assert "meters.house.key" in warning and "chmod 600" in warning
    assert_no_secret(warning, KEY)
    assert _load(tmp_path, METER + f'key = "{KEY}"\n', mode=0o600).warnings == ()
    assert _load(tmp_path, METER, mode=0o644).warnings == ()


def test_inline_mqtt_password_warns_too(tmp_path: Path) -> None:
    config = _load(tmp_path, METER + '[publishers.mqtt]\nusername = "u"\npassword = "pw"\n', mode=0o640)
    assert any("publishers.mqtt.password" in w for w in config.warnings)


def test_world_readable_key_file_warns(tmp_path: Path) -> None:
    (tmp_path / "k").write_text(KEY)
    (tmp_path / "k").chmod(0o644)
    config = _load(tmp_path, METER + 'key_file = "k"\n', mode=0o644)
    (warning,) = config.warnings
    assert "meters.house.key_file" in warning and str(tmp_path / "k") in warning
    assert_no_secret(warning, KEY)


# --- errors ----------------------------------------------------------------------------

# (extra lines for the house meter, field named, text in the message)
METER_ERRORS = [
    ('baudrate = 0\n', "meters.house.baudrate", "at least 1"),
    ('baudrate = "2400"\n', "meters.house.baudrate", "whole number"),
    ('baudrate = true\n', "meters.house.baudrate", "whole number"),
    ('bytesize = 9\n', "meters.house.bytesize", "between 5 and 8"),
    ('stopbits = 3\n', "meters.house.stopbits", "1, 1.5 or 2"),
    ('stopbits = "1"\n', "meters.house.stopbits", "number"),
    ('parity = "X"\n', "meters.house.parity", "unknown parity 'X'"),
    ('parity = 1\n', "meters.house.parity", "quoted text"),
    ('link = "p1"\n', "meters.house.link", "hdlc"),
    ('model = "e999"\n', "meters.house.model", "e450"),
    ('push_interval = 0\n', "meters.house.push_interval", "greater than 0"),
    ('push_interval = -2.5\n', "meters.house.push_interval", "greater than 0"),
    ('push_interval = nan\n', "meters.house.push_interval", "greater than 0"),
    ('push_interval = inf\n', "meters.house.push_interval", "finite"),
    ('queue_frames = 0\n', "meters.house.queue_frames", "at least 1"),
    ('baudrat = 9600\n', "meters.house.baudrat", "did you mean baudrate?"),
    ('colour = "red"\n', "meters.house.colour", "valid settings here"),
    (f'key = "{KEY[:30]}"\n', "meters.house.key", "has 30 hex digits"),
    (f'key = "{KEY}00"\n', "meters.house.key", "has 34 hex digits"),
    (f'key = "{KEY[:31]}Z"\n', "meters.house.key", "not hex digits"),
    ('key = 0x0011223344556677\n', "meters.house.key", "quoted text"),
    (f'key = "{KEY}"\nkey_env = "K"\n', "meters.house.key_env", "only one of key, key_env"),
    ('key_env = "METERPIPE_TEST_UNSET"\n', "meters.house.key_env", "METERPIPE_TEST_UNSET is not set"),
    ('key_env = ""\n', "meters.house.key_env", "environment variable"),
    ('key_file = "missing.key"\n', "meters.house.key_file", "does not exist"),
    (f'auth_key = "{AUTH}"\n', "meters.house.auth_key", "needs an encryption key"),
    ('auth_key_env = "BAD_AUTH"\n', "meters.house.auth_key_env", "has 31 hex digits"),
    (f'key = "{KEY}"\nauth_key = "{AUTH[2:]}"\n', "meters.house.auth_key", "has 30 hex digits"),
]


@pytest.mark.parametrize(("extra", "field", "text"), METER_ERRORS, ids=[f"{i}-{e[1]}" for i, e in enumerate(METER_ERRORS)])
@pytest.mark.parametrize("case", [str.upper, str.lower])
def test_meter_errors(tmp_path: Path, extra: str, field: str, text: str,
                      case: Callable[[str], str]) -> None:
    conf = METER + extra
    if "=" in extra and '"' in extra:  # secrets in both cases; other values untouched
        conf = conf.replace(KEY, case(KEY)).replace(AUTH, case(AUTH))
    err = _error(tmp_path, conf, {"BAD_AUTH": case(AUTH[:31])})
    assert err.field == field
    assert str(err).startswith(field + ": ")
    assert text in str(err)
    assert "\n" not in str(err)
    assert_no_secret(str(err), KEY, AUTH, AUTH[:31], KEY[:30])


@pytest.mark.parametrize(("content", "text"), [
    (KEY[:20].encode(), "has 20 hex digits"),
    (b"\x00\xff" * 5, "neither 32 hex digits nor exactly 16 raw bytes"),
], ids=["short-hex", "binary"])
def test_bad_key_files(tmp_path: Path, content: bytes, text: str) -> None:
    (tmp_path / "k").write_bytes(content)
    err = _error(tmp_path, METER + 'key_file = "k"\n')
    assert err.field == "meters.house.key_file" and text in str(err)
    assert_no_secret(str(err), KEY[:20])


@pytest.mark.parametrize("content", ["", "meters = []\n"], ids=["absent", "empty"])
def test_no_meter_yet_is_a_warning(content: str) -> None:
    """A fresh install starts with no meter; the settings page adds them."""
    config = config_from_dict(tomllib.loads(content))
    assert config.meters == ()
    assert any("no meter configured yet" in w for w in config.warnings)


TOP_ERRORS = [
    ('meters = "house"\n', "meters", "[[meters]]"),
    ('[[meters]]\nport = "/dev/x"\n', "meters[0].name", "missing"),
    ('[[meters]]\nname = "bad name!"\nport = "/dev/x"\n', "meters[0].name", "invalid meter name"),
    ('[[meters]]\nname = 3\nport = "/dev/x"\n', "meters[0].name", "quoted text"),
    ('[[meters]]\nname = "' + "x" * 65 + '"\nport = "/dev/x"\n', "meters[0].name", "1-64"),
    ('[[meters]]\nname = "m"\n', "meters.m.port", "missing"),
    ('[[meters]]\nname = "m"\nport = ""\n', "meters.m.port", "empty"),
    ('[[meters]]\nname = "m"\nport = "spy:///dev/ttyUSB0?file=/etc/x"\n', "meters.m.port", "not a meter port"),
    (METER + METER.replace("/dev/ttyUSB0", "/dev/other"), "meters[1].name", "duplicate meter name 'house'"),
    ('metres = 1\n' + METER, "metres", "did you mean meters?"),
    (METER + '[endpoint]\nframes = "ipc:///x"\n', "endpoint", "did you mean endpoints?"),
    (METER + '[endpoints]\nframes = "http://x"\n', "endpoints.frames", "ipc://, tcp:// or inproc://"),
    (METER + '[endpoints]\nframes = "tcp://127.0.0.1:0"\n', "endpoints.frames", "port must be 1-65535"),
    (METER + '[endpoints]\nreadings = "tcp://127.0.0.1"\n', "endpoints.readings", "tcp://HOST:PORT"),
    (METER + '[endpoints]\nframes = "ipc:///' + "a" * 107 + '"\n', "endpoints.frames", "108 bytes"),
    (METER + '[endpoints]\nframes = "inproc://x"\nreadings = "inproc://x"\n', "endpoints.readings", "differ"),
    (METER + '[endpoints]\nframe = "inproc://x"\n', "endpoints.frame", "did you mean frames?"),
    (METER + '[endpoints]\nframes = 5\n', "endpoints.frames", "quoted text"),
    (METER + 'endpoints = 5\n', "meters.house.endpoints", "unknown setting"),
    (METER + '[publishers.mqt]\n', "publishers.mqt", "did you mean mqtt?"),
    (METER + '[publishers]\ncsv = 1\n', "publishers.csv", "expected a table"),
    (METER + '[publishers.mqtt]\nqos = 3\n', "publishers.mqtt.qos", "between 0 and 2"),
    (METER + '[publishers.mqtt]\nport = 0\n', "publishers.mqtt.port", "between 1 and 65535"),
    (METER + '[publishers.mqtt]\nkeepalive = 0\n', "publishers.mqtt.keepalive", "at least 1"),
    (METER + '[publishers.mqtt]\nenabled = "yes"\n', "publishers.mqtt.enabled", "true or false"),
    (METER + '[publishers.mqtt]\nlayout = "flat"\n', "publishers.mqtt.layout", "smartmeter-datacollector"),
    (METER + '[publishers.mqtt]\nbase_topic = "a/#"\n', "publishers.mqtt.base_topic", "no + or #"),
    (METER + '[publishers.mqtt]\ndiscovery_prefix = "/ha"\n', "publishers.mqtt.discovery_prefix", "leading"),
    (METER + '[publishers.mqtt]\npassword = "pw-secret"\n', "publishers.mqtt.password", "needs a username"),
    (METER + '[publishers.mqtt]\nusername = "u"\npassword = "pw-secret"\npassword_env = "X"\n',
     "publishers.mqtt.password_env", "only one of"),
    (METER + '[publishers.mqtt]\nusername = "u"\npassword_env = "METERPIPE_TEST_UNSET"\n',
     "publishers.mqtt.password_env", "is not set"),
    (METER + '[publishers.mqtt]\nusername = "u"\npassword_file = "nope"\n',
     "publishers.mqtt.password_file", "does not exist"),
    (METER + '[publishers.mqtt]\nusername = "u"\npassword = " "\n', "publishers.mqtt.password", "empty"),
    (METER + '[publishers.mqtt]\nca_file = "nope.pem"\n', "publishers.mqtt.ca_file", "does not exist"),
    (METER + '[publishers.mqtt]\nspool_max_bytes = 0\n', "publishers.mqtt.spool_max_bytes", "at least 1"),
    (METER + '[publishers.mqtt]\nhots = "x"\n', "publishers.mqtt.hots", "did you mean host?"),
    (METER + '[publishers.csv]\nretention_days = 0\n', "publishers.csv.retention_days", "at least 1"),
    (METER + '[publishers.csv]\ndirectory = 5\n', "publishers.csv.directory", "quoted text"),
    (METER + '[publishers.csv]\nretention = 5\n', "publishers.csv.retention", "did you mean retention_days?"),
    (METER + '[publishers.journal]\nsocket = ""\n', "publishers.journal.socket", "empty"),
    (METER + '[publishers.journal]\nenable = true\n', "publishers.journal.enable", "did you mean enabled?"),
]


@pytest.mark.parametrize(("text", "field", "message"), TOP_ERRORS, ids=[f"{i}-{e[1]}" for i, e in enumerate(TOP_ERRORS)])
def test_config_errors(tmp_path: Path, text: str, field: str, message: str) -> None:
    err = _error(tmp_path, text)
    assert err.field == field
    assert message in str(err)
    assert "\n" not in str(err)
    assert "pw-secret" not in str(err)


def test_runtime_dir_too_long_for_default_endpoints(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100)
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, METER), environ={"METERPIPE_RUNTIME_DIR": str(deep)})
    assert info.value.field == "endpoints.frames" and "ZeroMQ allows at most 107" in str(info.value)
