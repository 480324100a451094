"""``meterpipe-mqtt``: publish every push to an MQTT broker, store-and-forward.

Each push is turned into MQTT messages (:mod:`mqtt_layout`), preceded the first
time a reading is seen by its Home Assistant discovery config
(:mod:`discovery`), written to the sqlite spool (:mod:`spool`) in one
transaction, and sent from there by :class:`mqtt_link.MqttLink` as the broker
acknowledges. A broker outage therefore loses nothing (up to
``spool_max_bytes``), and neither does a restart of this process.

Spool location: ``publishers.mqtt.spool_path``, else
``$STATE_DIRECTORY/mqtt-spool.sqlite`` (systemd's StateDirectory=), else
``mqtt-spool.sqlite`` next to the CSV directory (``publishers.csv.directory``'s
parent, ``data/`` by default): persistent storage, not the runtime dir, which
is often a tmpfs emptied at boot.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from meterpipe.common.config import Config
from meterpipe.common.publisher_config import MqttConfig
from meterpipe.common.schema import ReadingsMessage
from meterpipe.publishers.mqtt import discovery
from meterpipe.publishers.mqtt.layout import (
    OutMessage,
    availability_topic,
    meterpipe_messages,
    sdc_messages,
    sdc_topic,
    sdc_type,
    value_topic,
)
from meterpipe.publishers.mqtt.link import MqttLink
from meterpipe.publishers.mqtt.spool import Spool
from meterpipe.publishers.subscriber import Handler, run_publisher

log = logging.getLogger(__name__)

SDC_LAYOUT = "smartmeter-datacollector"


def spool_path(config: Config) -> Path:
    cfg = config.publishers.mqtt
    if cfg.spool_path is not None:
        return cfg.spool_path
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0]) / "mqtt-spool.sqlite"
    return config.publishers.csv.directory.parent / "mqtt-spool.sqlite"


def push_messages(cfg: MqttConfig, msg: ReadingsMessage, announced: set[tuple[str, str]]) -> list[OutMessage]:
    """The MQTT messages for one push: discovery configs first (once per reading), then data."""
    out: list[OutMessage] = []
    sdc = cfg.layout == SDC_LAYOUT
    if cfg.discovery:
        for r in msg.push.readings:
            key = (msg.meter, r.name)
            if key in announced:
                continue
            if sdc:
                type_name = sdc_type(r)
                if type_name is None or not r.is_number:
                    continue
                state, template = sdc_topic(msg, type_name), "{{ value_json.value }}"
            else:
                state, template = value_topic(cfg.base_topic, msg.meter, r.name), None
            announced.add(key)
            out.append(discovery.config_message(
                msg.meter, r, msg.push.meter_id, prefix=cfg.discovery_prefix, state_topic=state,
                availability_topic=availability_topic(cfg.base_topic), value_template=template,
                qos=cfg.qos))
    if sdc:
        out += sdc_messages(msg, cfg.qos, cfg.retain)
    else:
        out += meterpipe_messages(msg, cfg.base_topic, cfg.qos, cfg.retain)
    return out


class MqttHandler(Handler):
    """Pushes into the on-disk spool; the link drains it to the broker on every tick."""

    def __init__(self, cfg: MqttConfig, spool: Spool, link: MqttLink) -> None:
        self.cfg = cfg
        self.spool = spool
        self.link = link
        self._announced: set[tuple[str, str]] = set()
        self.spool_errors = 0

    def on_readings(self, msg: ReadingsMessage) -> None:
        try:
            self.spool.add(push_messages(self.cfg, msg, self._announced), meter=msg.meter, received_ns=msg.received_ns)
        except sqlite3.Error as exc:  # disk full, database locked: this push is lost, the next may go
            self.spool_errors += 1
            log.error("MQTT spool %s cannot store push %s of meter %s (%s); %s lost so far",
                      self.spool.path, msg.seq, msg.meter, exc, self.spool_errors)

    def tick(self, now: float) -> None:
        self.link.tick()

    def poll_fds(self) -> list[int]:
        fd = self.link.fileno()
        return [] if fd is None else [fd]

    def replay_cursor(self) -> dict[str, int]:
        return self.spool.cursor()

    def close(self) -> None:
        self.link.close()
        if len(self.spool):
            log.info("%s MQTT message(s) left in the spool %s for the next start",
                     len(self.spool), self.spool.path)
        self.spool.close()


def build(config: Config) -> tuple[Handler, Callable[[], None]]:
    cfg = config.publishers.mqtt
    path = spool_path(config)
    spool = Spool(path, cfg.spool_max_bytes)
    try:
        link = MqttLink(cfg, spool, availability_topic=availability_topic(cfg.base_topic), clock=time.monotonic)
    except Exception:
        spool.close()
        raise
    log.info("MQTT: broker %s:%s%s, layout %s, spool %s", cfg.host, cfg.port, " (TLS)" if cfg.tls else "",
             cfg.layout, path)
    handler = MqttHandler(cfg, spool, link)
    return handler, handler.close


def main(argv: Sequence[str] | None = None) -> int:
    return run_publisher("meterpipe-mqtt", "Publish meter readings to an MQTT broker.", argv, "mqtt", build)


if __name__ == "__main__":
    raise SystemExit(main())
