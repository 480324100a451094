"""What every process does first: find and load the config, or exit with code 2.

A bad config stops a process at start with exit code 2 and one line on stderr
naming the setting and the fix (``config error: meters.house.key: ...``);
supervisord's ``exitcodes`` then keeps it from restart-looping. Warnings
(a world-readable file holding a key inline, ...) are logged and do not stop it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from meterpipe.common.config import CONFIG_ENV, Config, load_config
from meterpipe.common.errors import ConfigError

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
