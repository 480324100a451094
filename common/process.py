"""Process plumbing, written once: what every meterpipe ``main()`` does first.

* :func:`base_parser`: ``--config FILE`` and ``-v``, the options every process has;
* :func:`load_config_or_exit`: the config, or one line on stderr naming the
  setting (``config error: meters.house.key: ...``) and exit code 2, which
  supervisord's ``exitcodes`` keeps from restart-looping; warnings (a
  world-readable file holding a key inline, ...) are logged and do not stop it;
* :class:`StopFlag`: SIGTERM/SIGINT only set it; loops poll it every
  :data:`POLL_MS` at most;
* :class:`Backoff`: the retry delays of everything that reconnects;
* the exit codes every process shares.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType

from meterpipe.common.config import CONFIG_ENV, Config, load_config
from meterpipe.common.errors import ConfigError

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CONFIG = 2  # a bad setting: restarting would not help (supervisord exitcodes=0,2)
EXIT_UNAVAILABLE = 3  # a socket or port the process needs is taken or missing
EXIT_RESTART = 75  # "start me again": not in supervisord's exitcodes, so it restarts the process
POLL_MS = 500  # idle wake-ups twice a second; SIGTERM is seen within half a second


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


def load_config_or_exit(path: str | None) -> Config:
    """Load the config; on ConfigError print one line to stderr and exit with code 2."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        raise SystemExit(config_error_exit(exc)) from exc
    for warning in config.warnings:
        log.warning("config: %s", warning)
    return config


def terminal_columns() -> int:
    """``shutil.get_terminal_size().columns``: $COLUMNS, else the terminal's width, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0 and sys.__stdout__ is not None:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):  # not a terminal, closed, detached
            columns = 0
    return columns if columns > 0 else 80


class HelpFormatter(argparse.HelpFormatter):
    """argparse's own formatter at the same width, given rather than looked up: argparse
    looks it up with ``import shutil``, which loads zlib, bz2 and lzma (0.4 MB in every
    process, one reader per meter) when the parser is built, not only for ``--help``."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=terminal_columns() - 2)


def base_parser(
    prog: str, description: str, *, verbose: bool = True, config: bool = True
) -> argparse.ArgumentParser:
    """An argument parser with ``--config FILE`` (unless ``config`` is false: commands that
    read no config) and ``-v/--verbose`` (for processes that log)."""
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    if config:
        add_config_argument(parser)
    if verbose:
        parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    return parser


@contextlib.contextmanager
def signal_wakeup() -> Iterator[int | None]:
    """A descriptor that turns readable when a signal arrives, for a loop's poller.

    With it a loop may wait long when idle (a Pi should sleep) and still see
    SIGTERM at once: the stop flag's handler runs, the poll returns. None outside
    the main thread, where Python cannot install it: poll with a short timeout there.
    """
    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    read, write = socket.socketpair()
    read.setblocking(False)
    write.setblocking(False)
    previous = signal.set_wakeup_fd(write.fileno(), warn_on_full_buffer=False)
    try:
        yield read.fileno()
    finally:
        signal.set_wakeup_fd(previous)
        read.close()
        write.close()


def drain(fd: int) -> None:
    """Read what is waiting on a non-blocking descriptor (the signal numbers of :func:`signal_wakeup`)."""
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while os.read(fd, 64):
            pass


def freeze_startup_heap() -> None:
    """Keep the garbage collector off what the start made (modules, config, templates).

    Those objects live as long as the process; without this every full collection
    walks all of them again (tens of milliseconds for a web process, a few times an
    hour on a Pi that should be idle). Call it once, right before the main loop.
    """
    import gc

    gc.collect()
    gc.freeze()


class StopFlag:
    """Set by SIGTERM/SIGINT (after :meth:`install`) or by :meth:`set`; loops call it to ask.

    The handler only sets the flag and notes when (``at``, monotonic seconds), so
    a loop that polls with a timeout sees it within one poll.
    """

    def __init__(self) -> None:
        self.requested = False
        self.at = 0.0

    def __call__(self) -> bool:
        return self.requested

    def set(self, signum: int = 0, frame: FrameType | None = None) -> None:
        if not self.requested:
            self.requested = True
            self.at = time.monotonic()

    def install(self) -> StopFlag:
        signal.signal(signal.SIGTERM, self.set)
        signal.signal(signal.SIGINT, self.set)
        return self

    def left(self, budget: float) -> float:
        """Seconds left of ``budget`` since the stop request (all of it before one)."""
        return budget - (time.monotonic() - self.at) if self.requested else budget


class Backoff:
    """Exponential retry delays: ``initial`` doubling up to ``cap``, plus up to ``jitter`` of each."""

    def __init__(
        self,
        initial: float = 0.5,
        cap: float = 30.0,
        jitter: float = 0.1,
        rng: random.Random | None = None,
    ) -> None:
        if initial <= 0 or cap < initial or not 0 <= jitter < 1:
            raise ValueError("backoff needs 0 < initial <= cap and 0 <= jitter < 1")
        self._initial = initial
        self._cap = cap
        self._jitter = jitter
        self._rng = rng or random.Random()
        self._next = initial

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._cap, self._next * 2)
        return delay * (1 + self._jitter * self._rng.random())

    def reset(self) -> None:
        self._next = self._initial


def config_error_exit(exc: ConfigError) -> int:
    """Print the one ``config error:`` line for ``exc`` and give the exit code for it."""
    print(error_line(exc), file=sys.stderr, flush=True)
    return EXIT_CONFIG
