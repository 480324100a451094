"""Logging set-up for meterpipe processes: one call, in main(), to stdout.

supervisord captures each process's stdout, so every process logs there with
one line per record::

    2024-05-01 12:00:00,123 decoder INFO meterpipe.decoder.main: listening on ipc://...

Modules only do ``logging.getLogger(__name__)`` with lazy ``%s`` arguments and
never set levels or handlers themselves.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _MeterpipeHandler(logging.StreamHandler):  # type: ignore[type-arg]  # generic only in stubs
    """Marks the handler we installed, so a second setup_logging() replaces it."""


def setup_logging(verbose: bool = False, *, name: str | None = None) -> None:
    """Send the root logger to stdout at INFO (DEBUG with ``verbose``).

    ``name`` (the process name, e.g. ``"reader house"``) prefixes every line so
    that logs of several processes merged in one file stay readable. Calling it
    again replaces the handler installed before rather than adding a second one.
    """
    fmt = FORMAT
    if name:
        fmt = FORMAT.replace(" %(levelname)s", " " + name.replace("%", "%%") + " %(levelname)s", 1)
    handler = _MeterpipeHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _MeterpipeHandler):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
