"""What every process does first: find and load the config, or exit with code 2.

A bad config stops a process at start with exit code 2 and one line on stderr
naming the setting and the fix (``config error: meters.house.key: ...``);
supervisord's ``exitcodes`` then keeps it from restart-looping. Warnings
(a world-readable file holding a key inline, ...) are logged and do not stop it.

``meterpipe check-config`` (:func:`check_main`) runs the same loading and prints
a summary without secrets: keys show as a fingerprint at most.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from meterpipe.common.config import CONFIG_ENV, Config, MeterConfig, load_config
from meterpipe.common.errors import ConfigError, fingerprint

log = logging.getLogger(__name__)

EXIT_CONFIG = 2


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE`` to a process's argument parser (default: None = look it up)."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help=f"config file (default: ${CONFIG_ENV}, else ./meterpipe.toml)",
    )


def error_line(exc: ConfigError) -> str:
    """``config error: <field>: <message>`` on a single line."""
    text = " ".join(str(exc).split())
    return f"config error: {text}"


def load_or_exit(path: str | None) -> Config:
    """Load the config; on ConfigError print one line to stderr and exit with code 2."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(error_line(exc), file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CONFIG) from exc
    for warning in config.warnings:
        log.warning("config: %s", warning)
    return config


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
    lines.append(f"publishers: mqtt {mqtt}; csv {csv}; journal {journal}")
    return lines


def check_main(argv: Sequence[str] | None = None) -> int:
    """``meterpipe check-config [--config FILE]``: validate and summarise; 0 or 2."""
    parser = argparse.ArgumentParser(
        prog="meterpipe check-config",
        description="Validate the meterpipe config file and print a summary (keys never shown).",
    )
    add_config_argument(parser)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(error_line(exc), file=sys.stderr, flush=True)
        return EXIT_CONFIG
    for warning in config.warnings:
        print(f"config warning: {warning}", file=sys.stderr)
    for line in summary(config):
        print(line)
    return 0
