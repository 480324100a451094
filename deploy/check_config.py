"""``meterpipe check-config``: validate the config file and summarise it without secrets.

It loads the config exactly as every process does at start (exit 2 and one line
naming the setting on error); keys show as a fingerprint at most, passwords as
"set".
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from meterpipe.common.config import Config, MeterConfig, load_config
from meterpipe.common.errors import ConfigError, fingerprint
from meterpipe.common.process import base_parser, config_error_exit


def _secret(value: bytes | None) -> str:
    return f"set (fingerprint {fingerprint(value)})" if value is not None else "none"


def meter_summary(meter: MeterConfig) -> str:
    """One line describing a meter, without any key material."""
    stopbits = f"{meter.stopbits:g}"
    parts = [
        f"meter {meter.name}: port {meter.port} {meter.baudrate} {meter.bytesize}{meter.parity}{stopbits}",
        f"link {meter.link.value}",
        f"model {meter.model or 'unspecified'}",
        f"key: {_secret(meter.key)}",
        f"auth key: {_secret(meter.auth_key)}",
        f"push every {meter.push_interval:g} s",
    ]
    return ", ".join(parts)


def summary(config: Config) -> list[str]:
    """The lines ``meterpipe check-config`` prints (no secrets)."""
    lines = [f"config OK: {config.source or '(no file)'}: {len(config.meters)} meter(s)"]
    lines += [meter_summary(m) for m in config.meters]
    ep = config.endpoints
    lines.append(f"endpoints: frames {ep.frames}, readings {ep.readings}")
    pub = config.publishers
    mqtt = "off"
    if pub.mqtt.enabled:
        auth = f", user {pub.mqtt.username}, password: {'set' if pub.mqtt.password else 'none'}" \
            if pub.mqtt.username else ""
        mqtt = f"{pub.mqtt.host}:{pub.mqtt.port}{' tls' if pub.mqtt.tls else ''}{auth}"
    csv = f"{pub.csv.directory}" if pub.csv.enabled else "off"
    journal = "on" if pub.journal.enabled else "off"
    history = f"{pub.history.path}" if pub.history.enabled else "off"
    lines.append(f"publishers: mqtt {mqtt}; csv {csv}; journal {journal}; history {history}")
    web = config.web
    if web.enabled:
        access = ("this machine only" if web.loopback_only else
                  "other machines, password " + ("set" if web.password_file.exists() else
                                                 "NOT set: run meterpipe web set-password"))
        host = f"[{web.host}]" if ":" in web.host else web.host
        lines.append(f"web: http://{host}:{web.port}/ ({access}), time zone {web.timezone}")
    else:
        lines.append("web: off")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """``meterpipe check-config [--config FILE]``: validate and summarise; 0 or 2."""
    parser = base_parser("meterpipe check-config",
                         "Validate the meterpipe config file and print a summary (keys never shown).", verbose=False)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return config_error_exit(exc)
    for warning in config.warnings:
        print(f"config warning: {warning}", file=sys.stderr)
    for line in summary(config):
        print(line)
    return 0
