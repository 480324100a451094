"""Saving the settings page's changes: comments survive, a refused config writes nothing,
secrets go to 0600 key files and never into the file, the view shows only fingerprints."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from meterpipe.common.config import load_config
from meterpipe.common.config_edit import public_view
from meterpipe.common.config_file import plain, read_tables, save, write_starter
from meterpipe.common.errors import ConfigError

KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
NEW_KEY = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
PASSWORD = "broker-secret-71"

USER_FILE = f"""\
# My meterpipe config -- hand-written, please keep this comment
[[meters]]
name = "house"   # the main meter
port = "/dev/null"
parity = "E"     # L+G says 8E1
key = "{KEY}"

# MQTT to the NAS
[publishers.mqtt]
enabled = false
host = "127.0.0.1"  # the broker

[web]
listen = "127.0.0.1:8089"
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "meterpipe.toml"
    path.write_text(USER_FILE)
    path.chmod(0o600)
    return path


def view_of(path: Path) -> dict:
    _, doc = read_tables(path)
    return public_view(plain(doc), load_config(path))


def test_the_view_holds_fingerprints_never_values(config_file: Path) -> None:
    view = view_of(config_file)
    key = view["meters"][0]["key"]
    assert key["set"] is True and key["source"] == "inline" and len(key["fingerprint"]) == 8
    assert view["meters"][0]["auth_key"] is None
    text = json.dumps(view)
    assert KEY not in text and KEY.upper() not in text
    assert base64.b64encode(bytes.fromhex(KEY)).decode() not in text


def test_a_change_keeps_every_comment_and_the_order(config_file: Path) -> None:
    view = view_of(config_file)
    view["meters"][0]["baudrate"] = 9600
    view["publishers"]["mqtt"]["enabled"] = True
    config, edit = save(config_file, view)
    text = config_file.read_text()
    for line in USER_FILE.splitlines():
        if line.startswith("#") or "#" in line:
            assert line in text, line
    assert text.index("[[meters]]") < text.index("[publishers.mqtt]") < text.index("[web]")
    assert config.meters[0].baudrate == 9600 and config.publishers.mqtt.enabled
    assert config.meters[0].key == bytes.fromhex(KEY)  # kept, untouched
    assert f'key = "{KEY}"' in text
    assert "meters.house.baudrate" in edit.changed and "publishers.mqtt.enabled" in edit.changed
    assert (config_file.parent / "meterpipe.toml.bak").read_text() == USER_FILE
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600


def test_a_refused_config_changes_nothing_on_disk(config_file: Path) -> None:
    before = {p.name: p.read_bytes() for p in config_file.parent.iterdir()}
    view = view_of(config_file)
    view["meters"][0]["baudrate"] = 0
    view["meters"][0]["key"] = NEW_KEY  # a new key with a bad setting: no key file either
    with pytest.raises(ConfigError) as err:
        save(config_file, view)
    assert err.value.field == "meters.house.baudrate"
    assert {p.name: p.read_bytes() for p in config_file.parent.iterdir()} == before


def test_a_new_key_goes_to_a_0600_key_file(config_file: Path) -> None:
    view = view_of(config_file)
    view["meters"].append({"name": "garage", "port": "/dev/null", "key": NEW_KEY, "auth_key": KEY})
    view["meters"][0]["key"] = None  # cleared
    config, edit = save(config_file, view)
    text = config_file.read_text()
    assert NEW_KEY not in text and KEY not in text
    assert 'key_file = "keys/garage.key"' in text and 'auth_key_file = "keys/garage.auth"' in text
    key_file = config_file.parent / "keys" / "garage.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert config.meter("garage").key == bytes.fromhex(NEW_KEY)
    assert config.meter("house").key is None
    assert any("meters.garage.key (new value" in c for c in edit.changed)
    assert all(NEW_KEY not in c for c in edit.changed)


def test_a_password_goes_to_a_file_and_a_rename_keeps_the_key(config_file: Path) -> None:
    view = view_of(config_file)
    view["publishers"]["mqtt"].update(username="meter", password=PASSWORD)
    view["meters"][0]["name"] = "home"
    view["meters"][0]["was"] = "house"
    config, _ = save(config_file, view)
    assert PASSWORD not in config_file.read_text()
    assert config.publishers.mqtt.password == PASSWORD
    assert config.meter("home").key == bytes.fromhex(KEY)
    assert stat.S_IMODE((config_file.parent / "keys" / "mqtt.password").stat().st_mode) == 0o600


def test_the_starter_loads_with_no_meter_and_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "meterpipe.toml"
    write_starter(path, "127.0.0.1:8090")
    config = load_config(path)
    assert config.meters == () and config.web.port == 8090
    with pytest.raises(FileExistsError):
        write_starter(path, "127.0.0.1:8091")
    assert os.stat(path).st_mode & 0o077 == 0


def test_the_first_meter_is_added_to_the_starter(tmp_path: Path) -> None:
    path = tmp_path / "meterpipe.toml"
    write_starter(path, "127.0.0.1:8090")
    view = view_of(path)
    view["meters"] = [{"name": "garage", "port": "/dev/null"}]
    config, _ = save(path, view)
    assert [m.name for m in config.meters] == ["garage"]
    assert "# One table per meter" in path.read_text()


def test_removing_the_last_meter_leaves_no_empty_list_behind(config_file: Path) -> None:
    view = view_of(config_file)
    view["meters"] = []
    config, edit = save(config_file, view)
    text = config_file.read_text()
    assert config.meters == () and "meters" not in text.replace("# My meterpipe", "")
    assert text.startswith("# My meterpipe config") and "# MQTT to the NAS" in text
    assert "meters.house (removed)" in edit.changed


@pytest.mark.parametrize("gone", ["house", "garage"])
def test_a_removed_meter_takes_no_comment_of_its_neighbours(config_file: Path, gone: str) -> None:
    text = USER_FILE.replace("# MQTT to the NAS", '# the garage meter\n[[meters]]\nname = "garage"\n'
                             'port = "/dev/null"\n\n# MQTT to the NAS')
    config_file.write_text(text)
    view = view_of(config_file)
    view["meters"] = [m for m in view["meters"] if m["name"] != gone]
    save(config_file, view)
    after = config_file.read_text()
    assert "# MQTT to the NAS\n[publishers.mqtt]" in after
    assert after.startswith("# My meterpipe config")
    if gone == "house":
        assert '# the garage meter\n[[meters]]\nname = "garage"' in after
    assert [m.name for m in load_config(config_file).meters] == [n for n in ("house", "garage") if n != gone]


def test_a_renamed_meters_key_file_is_never_reused_for_another(config_file: Path) -> None:
    """house -> garage keeps its key (key = inline, then moved to keys/garage.key); a new meter
    called house gets a file of its own, and garage still decrypts with its own key."""
    view = view_of(config_file)
    view["meters"][0].update(name="garage", was="house", key=NEW_KEY)
    save(config_file, view)
    view = view_of(config_file)
    view["meters"].append({"name": "house", "port": "/dev/null", "key": KEY})
    view["meters"][0].update(name="house2", was="garage")  # and the renamed one moves on
    config, _ = save(config_file, view)
    assert config.meter("house2").key == bytes.fromhex(NEW_KEY)
    assert config.meter("house").key == bytes.fromhex(KEY)
    view = view_of(config_file)
    view["meters"].append({"name": "garage", "port": "/dev/null", "key": KEY})
    config, _ = save(config_file, view)  # keys/garage.key is house2's: the new garage gets another
    assert config.meter("house2").key == bytes.fromhex(NEW_KEY)
    assert config.meter("garage").key == bytes.fromhex(KEY)
    assert 'key_file = "keys/garage-2.key"' in config_file.read_text()


def test_a_secret_source_cannot_be_pointed_elsewhere(config_file: Path) -> None:
    """Over the page, a key or password is given as a value, never as a path: otherwise a session
    could make the MQTT publisher send a meter key to a broker as its password."""
    view = view_of(config_file)
    view["publishers"]["mqtt"].update(enabled=True, username="u", password=None, password_file="keys/house.key")
    with pytest.raises(ConfigError) as err:
        save(config_file, view)
    assert err.value.field == "publishers.mqtt.password_file"
    view = view_of(config_file)
    view["meters"][0]["key_env"] = "HOME"
    with pytest.raises(ConfigError) as err:
        save(config_file, view)
    assert err.value.field == "meters.house.key_env"
    assert config_file.read_text() == USER_FILE


def test_a_stored_password_is_not_sent_to_a_new_broker(config_file: Path) -> None:
    view = view_of(config_file)
    view["publishers"]["mqtt"].update(username="u", password=PASSWORD)
    save(config_file, view)
    view = view_of(config_file)
    view["publishers"]["mqtt"]["host"] = "192.0.2.7"
    with pytest.raises(ConfigError) as err:
        save(config_file, view)
    assert err.value.field == "publishers.mqtt.password" and "enter its password again" in str(err.value)
    view["publishers"]["mqtt"]["password"] = PASSWORD
    config, _ = save(config_file, view)
    assert config.publishers.mqtt.host == "192.0.2.7" and config.publishers.mqtt.password == PASSWORD


def test_the_backup_keeps_no_secret_that_left_the_file(config_file: Path) -> None:
    config_file.chmod(0o644)
    view = view_of(config_file)
    view["meters"][0]["key"] = NEW_KEY  # the inline key is replaced by a key file
    save(config_file, view)
    backup = config_file.with_name("meterpipe.toml.bak")
    assert KEY not in backup.read_text() and "(removed by the settings page)" in backup.read_text()
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert KEY not in config_file.read_text() and NEW_KEY not in config_file.read_text()


def test_a_write_that_fails_is_a_clear_error_and_leaves_the_file(config_file: Path) -> None:
    (config_file.parent / "keys").write_text("not a folder")  # so the key file cannot be written
    view = view_of(config_file)
    view["meters"][0]["key"] = NEW_KEY
    with pytest.raises(ConfigError) as err:
        save(config_file, view)
    assert "cannot write beside the config file" in str(err.value) and NEW_KEY not in str(err.value)
    assert config_file.read_text() == USER_FILE
