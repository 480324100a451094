"""Issue 11: what a config change restarts (deploy/apply.py, sans-IO): one test per rule."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from meterpipe.common.config import Config, config_from_dict
from meterpipe.deploy.apply import Plan, plan
from meterpipe.deploy.programs import PUBLISHERS

KEY = "00112233445566778899AABBCCDDEEFF"
KEY2 = "FFEEDDCCBBAA99887766554433221100"
AUTH = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"

Doc = dict[str, Any]


def base() -> Doc:
    return {
        "meters": [
            {"name": "house", "port": "/dev/ttyUSB0", "link": "hdlc", "key": KEY, "model": "e450"},
            {"name": "flat", "port": "/dev/ttyUSB1"},
        ],
        "endpoints": {"frames": "ipc:///tmp/mp-plan/frames", "readings": "ipc:///tmp/mp-plan/readings"},
        "publishers": {
            "csv": {"enabled": True, "directory": "/tmp/mp-plan/data/csv"},
            "history": {"enabled": True, "path": "/tmp/mp-plan/data/history.sqlite"},
            "mqtt": {"enabled": False, "username": "mp", "password": "s3cret-pw"},
            "journal": {"enabled": False},
        },
        "web": {"enabled": True, "listen": "127.0.0.1:8080", "timezone": "Europe/Zurich"},
    }


def config(doc: Doc) -> Config:
    return config_from_dict(doc, environ={"METERPIPE_RUNTIME_DIR": "/tmp/mp-plan"})


def planned(change: Callable[[Doc], object]) -> Plan:
    old = base()
    new = copy.deepcopy(old)
    change(new)
    return plan(config(old), config(new))


def meter(doc: Doc, name: str) -> dict[str, Any]:
    return next(m for m in doc["meters"] if m["name"] == name)


def test_no_change_is_an_empty_plan() -> None:
    p = planned(lambda d: None)
    assert p == Plan() and p.empty() and p.lines() == []


def test_a_new_meter_adds_its_reader_and_the_decoder_rereads() -> None:
    p = planned(lambda d: d["meters"].append({"name": "garage", "port": "/dev/ttyUSB2", "key": KEY2}))
    assert p == Plan(add=("reader-garage",), hup_decoder=True)
    assert not p.empty()
    assert p.lines() == ["start reader-garage (new meter)", "the decoder re-reads its meters (new meter garage)"]


def test_a_removed_meter_removes_its_reader_only() -> None:
    p = planned(lambda d: d["meters"].pop(1))
    assert p == Plan(remove=("reader-flat",), hup_decoder=True)
    assert p.lines()[0] == "stop and remove reader-flat (meter removed)"


def test_meters_added_and_removed_at_once_are_in_name_order() -> None:
    def change(d: Doc) -> None:
        d["meters"] = [{"name": n, "port": f"/dev/{n}"} for n in ("zeta", "alpha")]

    p = planned(change)
    assert p == Plan(add=("reader-alpha", "reader-zeta"), remove=("reader-flat", "reader-house"), hup_decoder=True)


@pytest.mark.parametrize(("setting", "value"), [
    ("port", "/dev/ttyACM0"), ("baudrate", 115200), ("parity", "E"), ("bytesize", 7), ("stopbits", 2),
    ("queue_frames", 50),
])
def test_port_settings_restart_the_reader_only(setting: str, value: object) -> None:
    p = planned(lambda d: meter(d, "house").update({setting: value}))
    assert p == Plan(restart=("reader-house",))
    assert p.lines() == [f"restart reader-house ({setting} changed)"]


@pytest.mark.parametrize(("setting", "value"), [
    ("key", KEY2), ("auth_key", AUTH), ("model", "e570"), ("push_interval", 5.0),
])
def test_decoder_settings_send_a_sighup_and_restart_nothing(setting: str, value: object) -> None:
    p = planned(lambda d: meter(d, "house").update({setting: value}))
    assert p == Plan(hup_decoder=True)
    assert p.lines() == [f"the decoder re-reads its meters ({setting} of meter house changed)"]


def test_the_link_layer_restarts_the_reader_and_the_decoder_rereads() -> None:
    # the reader cuts frames by the link layer (reader/service.py make_framer), the decoder too
    p = planned(lambda d: meter(d, "house").update(link="mbus"))
    assert p == Plan(restart=("reader-house",), hup_decoder=True)


def test_a_key_moved_to_a_key_file_with_the_same_bytes_changes_nothing(tmp_path: Any) -> None:
    key_file = tmp_path / "house.key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)

    def change(d: Doc) -> None:
        del meter(d, "house")["key"]
        meter(d, "house")["key_file"] = str(key_file)

    assert planned(change).empty()


def test_changed_endpoints_restart_every_program_and_the_web_page() -> None:
    p = planned(lambda d: d["endpoints"].update(frames="ipc:///tmp/mp-plan/frames2"))
    assert p == Plan(restart=("decoder", "csv", "history", "reader-flat", "reader-house"), restart_web=True)
    assert not p.hup_decoder, "a restarted decoder reads its meters anyway; a HUP while it starts would kill it"


def test_changed_endpoints_with_a_new_meter_and_a_publisher_switched_on() -> None:
    def change(d: Doc) -> None:
        d["endpoints"]["readings"] = "ipc:///tmp/mp-plan/readings2"
        d["meters"].append({"name": "garage", "port": "/dev/ttyUSB2"})
        d["publishers"]["journal"]["enabled"] = True

    p = planned(change)
    assert p == Plan(add=("reader-garage",), restart=("decoder", "csv", "history", "reader-flat", "reader-house"),
                     start=("journal",), restart_web=True)


@pytest.mark.parametrize("name", PUBLISHERS)
def test_a_publisher_switched_on_starts(name: str) -> None:
    def change(d: Doc) -> None:
        d["publishers"][name]["enabled"] = not d["publishers"][name]["enabled"]

    p = planned(change)
    was_on = base()["publishers"][name]["enabled"]
    assert p.start == (() if was_on else (name,))
    assert p.stop == ((name,) if was_on else ())
    assert p.lines()[0] == f"{'stop' if was_on else 'start'} {name} (switched {'off' if was_on else 'on'})"
    assert not p.restart and not p.hup_decoder and not p.restart_web


@pytest.mark.parametrize(("name", "setting", "value"), [
    ("csv", "retention_days", 30), ("history", "recent_hours", 24), ("history", "minute_retention_days", 90),
])
def test_a_running_publisher_whose_section_changed_restarts(name: str, setting: str, value: object) -> None:
    p = planned(lambda d: d["publishers"][name].update({setting: value}))
    assert p == Plan(restart=(name,))
    assert p.lines() == [f"restart {name} ([publishers.{name}] changed)"]


def test_a_switched_off_publisher_whose_section_changed_stays_off() -> None:
    assert planned(lambda d: d["publishers"]["mqtt"].update(host="10.0.0.2")).empty()
    assert planned(lambda d: d["publishers"]["journal"].update(socket="/tmp/j")).empty()


def test_a_publisher_switched_on_with_other_changes_only_starts() -> None:
    p = planned(lambda d: d["publishers"]["mqtt"].update(enabled=True, host="10.0.0.2"))
    assert p == Plan(start=("mqtt",))


def test_a_new_mqtt_password_restarts_mqtt_and_never_shows_it() -> None:
    def change(d: Doc) -> None:
        d["publishers"]["mqtt"]["enabled"] = True

    def new_password(d: Doc) -> None:
        change(d)
        d["publishers"]["mqtt"]["password"] = "other-pw"

    old = base()
    change(old)
    new = copy.deepcopy(old)
    new_password(new)
    p = plan(config(old), config(new))
    assert p == Plan(restart=("mqtt",))
    text = repr(p) + "".join(p.lines())
    assert "s3cret-pw" not in text and "other-pw" not in text


def test_secrets_never_appear_in_the_plan() -> None:
    def change(d: Doc) -> None:
        meter(d, "house").update(key=KEY2, auth_key=AUTH)
        d["meters"].append({"name": "garage", "port": "/dev/ttyUSB2", "key": KEY, "auth_key": AUTH})

    p = planned(change)
    text = (repr(p) + "\n".join(p.lines())).lower()
    for secret in (KEY, KEY2, AUTH):
        assert secret.lower() not in text


def test_the_web_section_restarts_the_web_page_only() -> None:
    p = planned(lambda d: d["web"].update(listen="127.0.0.1:8081"))
    assert p == Plan(restart_web=True)
    assert p.lines() == ["the web page restarts (web settings changed)"]
    assert planned(lambda d: d["web"].update(tariff={"import_price": 0.3})) == Plan(restart_web=True)


def test_the_time_zone_restarts_history_too() -> None:
    p = planned(lambda d: d["web"].update(timezone="America/New_York"))
    assert p == Plan(restart=("history",), restart_web=True)
    assert "restart history (time zone changed)" in p.lines()


def test_the_time_zone_leaves_a_switched_off_history_alone() -> None:
    def change(d: Doc) -> None:
        d["publishers"]["history"]["enabled"] = False

    old = base()
    change(old)
    new = copy.deepcopy(old)
    new["web"]["timezone"] = "UTC"
    assert plan(config(old), config(new)) == Plan(restart_web=True)


def test_a_moved_history_database_restarts_history_and_the_web_page() -> None:
    p = planned(lambda d: d["publishers"]["history"].update(path="/tmp/mp-plan/data/elsewhere.sqlite"))
    assert p == Plan(restart=("history",), restart_web=True)
    assert "the web page restarts (history database moved)" in p.lines()


def test_a_moved_history_database_restarts_the_web_page_even_with_history_off() -> None:
    def change(d: Doc) -> None:
        d["publishers"]["history"]["enabled"] = False

    old = base()
    change(old)
    new = copy.deepcopy(old)
    new["publishers"]["history"]["path"] = "/tmp/mp-plan/data/elsewhere.sqlite"
    assert plan(config(old), config(new)) == Plan(restart_web=True)


def test_the_mqtt_spool_beside_the_csv_directory_moves_with_it() -> None:
    def on(d: Doc) -> None:
        d["publishers"]["mqtt"]["enabled"] = True

    old = base()
    on(old)
    new = copy.deepcopy(old)
    new["publishers"]["csv"]["directory"] = "/tmp/mp-plan/other/csv"
    p = plan(config(old), config(new))
    assert p == Plan(restart=("csv", "mqtt"))
    new["publishers"]["mqtt"]["spool_path"] = "/tmp/mp-plan/spool.sqlite"
    old["publishers"]["mqtt"]["spool_path"] = "/tmp/mp-plan/spool.sqlite"
    assert plan(config(old), config(new)) == Plan(restart=("csv",))


def test_the_default_history_path_follows_the_csv_directory() -> None:
    def change(d: Doc) -> None:
        d["publishers"]["csv"]["directory"] = "/tmp/mp-plan/other/csv"

    old = base()
    del old["publishers"]["history"]["path"]
    new = copy.deepcopy(old)
    change(new)
    assert plan(config(old), config(new)) == Plan(restart=("csv", "history"), restart_web=True)


def test_everything_at_once_is_ordered_and_lines_say_why() -> None:
    def change(d: Doc) -> None:
        d["meters"].pop(1)
        d["meters"].append({"name": "garage", "port": "/dev/ttyUSB2"})
        meter(d, "house").update(port="/dev/ttyACM0", key=KEY2)
        d["publishers"]["csv"]["enabled"] = False
        d["publishers"]["mqtt"]["enabled"] = True
        d["web"]["timezone"] = "UTC"

    p = planned(change)
    assert p == Plan(add=("reader-garage",), remove=("reader-flat",), restart=("history", "reader-house"),
                     start=("mqtt",), stop=("csv",), hup_decoder=True, restart_web=True)
    assert p.lines() == [
        "stop and remove reader-flat (meter removed)",
        "stop csv (switched off)",
        "restart history (time zone changed)",
        "restart reader-house (port changed)",
        "start reader-garage (new meter)",
        "start mqtt (switched on)",
        "the decoder re-reads its meters (key of meter house changed; meter flat removed; new meter garage)",
        "the web page restarts (web settings changed)",
    ]


def test_a_plan_refuses_the_web_page_and_a_program_twice() -> None:
    with pytest.raises(ValueError, match="restarts itself"):
        Plan(restart=("web",))
    with pytest.raises(ValueError, match="more than one step"):
        Plan(add=("reader-x",), remove=("reader-x",))
    assert Plan(restart_web=True).lines() == ["the web page restarts"]
    assert not Plan(hup_decoder=True).empty()
