"""MQTT payloads without a broker: both layouts, HA discovery, the sqlite spool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meterpipe.common.publisher_config import MqttConfig
from meterpipe.common.values import Reading
from meterpipe.publishers.mqtt import discovery
from meterpipe.publishers.mqtt.layout import OutMessage, meterpipe_messages, sdc_messages
from meterpipe.publishers.mqtt.main import push_messages
from meterpipe.publishers.mqtt.spool import Spool
from tests.publishers.conftest import make_msg


def test_meterpipe_layout_topics_and_values() -> None:
    out = meterpipe_messages(make_msg(3), "meterpipe", 1, False)
    by_topic = {m.topic: m.payload for m in out}
    assert by_topic["meterpipe/house/active_energy_import"] == b"567890.3"
    assert by_topic["meterpipe/house/voltage_l1"] == b"230.1"
    assert by_topic["meterpipe/house/current_l1"] == b"1.09"
    assert by_topic["meterpipe/house/logical_device_name"] == b"LGZ1030655933512"
    doc = json.loads(by_topic["meterpipe/house/json"])
    assert doc["seq"] == 3 and doc["meter"] == "house" and doc["meter_id"] == "LGZ1030655933512"
    assert {"obis": "1-0:32.7.0", "name": "voltage_l1", "value": 230.1, "unit": "V"} in doc["readings"]
    assert out[0].topic == "meterpipe/house/json"  # the whole push goes first


def test_smartmeter_datacollector_layout() -> None:
    msg = make_msg(1, readings=(
        Reading("0-0:42.0.0", "logical_device_name", "LGZ1030655933512"),
        Reading("1-0:1.8.0", "active_energy_import", 5678901, -1, "kWh"),
        Reading("1-0:1.7.0", "active_power_import", 1234, 0, "W"),
        Reading("1-0:32.7.0", "voltage_l1", 2301, -1, "V"),
        Reading("1-0:31.7.0", "current_l1", 109, -2, "A"),
        Reading("1-0:13.7.0", "power_factor", 998, -3, None),
        Reading("1-0:99.99.0", "unknown", 1, 0, None),
    ), time="2024-05-01T12:00:00Z")
    out = sdc_messages(msg, 0, False)
    assert [m.topic for m in out] == [
        "smartmeter/LGZ1030655933512/ACTIVE_ENERGY_P",
        "smartmeter/LGZ1030655933512/ACTIVE_POWER_P",
        "smartmeter/LGZ1030655933512/VOLTAGE_L1",
        "smartmeter/LGZ1030655933512/CURRENT_L1",
        "smartmeter/LGZ1030655933512/POWER_FACTOR",
    ]
    # exactly json.dumps({"value": float, "timestamp": int, "obis": "C.D.E"})
    assert out[0].payload == b'{"value": 567890100.0, "timestamp": 1714564800, "obis": "1.8.0"}'
    assert out[1].payload == b'{"value": 1234.0, "timestamp": 1714564800, "obis": "1.7.0"}'
    assert out[3].payload == b'{"value": 1.09, "timestamp": 1714564800, "obis": "31.7.0"}'
    assert json.loads(out[4].payload)["value"] == 0.998


def test_sdc_timestamp_falls_back_to_receive_time_and_meter_name() -> None:
    msg = make_msg(5, time=None, meter_id=None)
    out = sdc_messages(msg, 1, False)
    assert out[0].topic == "smartmeter/house/ACTIVE_ENERGY_P"
    assert json.loads(out[0].payload)["timestamp"] == 1714564805


def _config(topic: str, msgs: list[OutMessage]) -> dict[str, object]:
    found = [json.loads(m.payload) for m in msgs if m.topic == topic]
    assert len(found) == 1, topic
    result: dict[str, object] = found[0]
    return result


@pytest.mark.parametrize(("name", "device_class", "state_class", "unit"), [
    ("active_energy_import", "energy", "total_increasing", "kWh"),
    ("active_power_import", "power", "measurement", "W"),
    ("voltage_l1", "voltage", "measurement", "V"),
    ("current_l1", "current", "measurement", "A"),
    ("logical_device_name", None, None, None),
])
def test_discovery_payload_per_reading_kind(name: str, device_class: str | None, state_class: str | None,
                                            unit: str | None) -> None:
    announced: set[tuple[str, str]] = set()
    out = push_messages(MqttConfig(), make_msg(1), announced)
    cfg = _config(f"homeassistant/sensor/meterpipe_house/{name}/config", out)
    assert cfg.get("device_class") == device_class
    assert cfg.get("state_class") == state_class
    assert cfg.get("unit_of_measurement") == unit
    assert cfg["state_topic"] == f"meterpipe/house/{name}"
    assert cfg["unique_id"] == f"meterpipe_house_{name}"
    assert cfg["availability_topic"] == "meterpipe/status"
    assert cfg["device"] == {"identifiers": ["meterpipe_house"], "name": "house",
                             "manufacturer": "Landis+Gyr", "serial_number": "LGZ1030655933512"}
    retained = [m for m in out if m.topic.endswith("/config")]
    assert all(m.retain for m in retained)
    # the second push announces nothing again
    again = push_messages(MqttConfig(), make_msg(2), announced)
    assert not [m for m in again if m.topic.startswith("homeassistant/")]


def test_discovery_power_factor_reactive_and_frequency() -> None:
    pf = Reading("1-0:33.7.0", "power_factor_l1", 998, -3, None)
    assert discovery.device_class(pf) == "power_factor"
    assert discovery.state_class(pf) == "measurement"
    q = Reading("1-0:3.7.0", "reactive_power_import", 10, 0, "VAr")
    assert discovery.device_class(q) == "reactive_power"
    assert discovery.unit_of_measurement(q) == "var"
    assert discovery.device_class(Reading("1-0:14.7.0", "frequency", 500, -1, "Hz")) == "frequency"
    assert discovery.state_class(Reading("1-0:3.8.0", "reactive_energy", 1, 0, "varh")) == "total_increasing"
    assert discovery.manufacturer("ISK1234") == "Iskraemeco"
    assert discovery.manufacturer("KFM_1") == "Kaifa"
    assert discovery.manufacturer("Kamstrup 123") == "Kamstrup"
    assert discovery.manufacturer("XYZ") is None


def test_discovery_disabled_and_sdc_layout() -> None:
    out = push_messages(MqttConfig(discovery=False), make_msg(1), set())
    assert not [m for m in out if m.topic.startswith("homeassistant/")]
    out = push_messages(MqttConfig(layout="smartmeter-datacollector"), make_msg(1), set())
    cfg = _config("homeassistant/sensor/meterpipe_house/voltage_l1/config", out)
    assert cfg["state_topic"] == "smartmeter/LGZ1030655933512/VOLTAGE_L1"
    assert cfg["value_template"] == "{{ value_json.value }}"
    assert not [m for m in out if "logical_device_name" in m.topic]


def test_spool_order_delete_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    spool = Spool(path, 10_000)
    spool.add([OutMessage("a/1", b"1"), OutMessage("a/2", b"2", 0, True)])
    spool.add([OutMessage("a/3", b"3")])
    batch = spool.batch(0, 2)
    assert [m.topic for _, m in batch] == ["a/1", "a/2"]
    assert batch[1][1] == OutMessage("a/2", b"2", 0, True)
    spool.delete([batch[0][0]])
    assert len(spool) == 2
    spool.close()
    spool = Spool(path, 10_000)
    assert [m.payload for _, m in spool.batch(0, 10)] == [b"2", b"3"]
    assert spool.size == 2 * (3 + 1)
    spool.close()


def test_spool_bound_drops_oldest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path / "spool.sqlite", 100)
    for i in range(30):
        spool.add([OutMessage("t", b"%09d" % i)])  # 10 bytes each
    assert spool.size <= 100
    assert len(spool) == 10
    assert spool.dropped == 20
    assert next(m.payload for _, m in spool.batch(0, 100)) == b"000000020"
    assert "spool over its limit" in caplog.text
    spool.close()
