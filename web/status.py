"""The Status view: the decoder's counters and last error per meter, and every process's state.

Process states come from the supervisord that runs us (``supervisorctl status`` on the
runtime directory in ``$METERPIPE_RUNTIME_DIR``), asked at most every
:data:`PROCESS_TTL` seconds and only when someone looks.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from meterpipe.common.schema import Status

PROCESS_TTL = 5.0

@dataclass(frozen=True, slots=True)
class Process:
    name: str
    state: str
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "state": self.state, "detail": self.detail}


def parse_supervisorctl(text: str) -> list[Process]:
    """Lines of ``supervisorctl status``: ``reader-house  RUNNING  pid 12, uptime 0:01:02``."""
    found = []
    for line in text.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[1].isupper():
            found.append(Process(parts[0], parts[1], parts[2].strip() if len(parts) > 2 else ""))
    return found


class ProcessStates:
    """supervisord's view of every process, cached for a few seconds."""

    def __init__(self) -> None:
        self._at = 0.0
        self._value: tuple[list[Process], str | None] = ([], None)
        self._lock = asyncio.Lock()

    def forget(self) -> None:
        """The processes changed (settings applied): ask again on the next look."""
        self._at = 0.0

    async def get(self) -> tuple[list[Process], str | None]:
        """(processes, why there are none) -- the reason is None when supervisord answered."""
        async with self._lock:
            if time.monotonic() - self._at > PROCESS_TTL:
                self._value = await asyncio.get_running_loop().run_in_executor(None, _ask)
                self._at = time.monotonic()
            return self._value


def _ask() -> tuple[list[Process], str | None]:
    import os

    from meterpipe.common.endpoints import runtime_dir
    from meterpipe.common.instances import holder_pid

    if not os.environ.get("METERPIPE_RUNTIME_DIR"):
        return [], "not started by 'meterpipe run' or 'meterpipe demo': no supervisord to ask"
    rundir = runtime_dir(create=False)
    if holder_pid(rundir) is None:
        return [], f"no supervisord holds {rundir}"
    from meterpipe.deploy.supervise import supervisorctl

    result = supervisorctl(rundir, "status", capture=True)
    processes = parse_supervisorctl(result.stdout)
    if not processes:
        return [], (result.stderr or result.stdout).strip()[:300] or "supervisorctl gave no answer"
    return processes, None


def meter_status(status: Status | None, age: float | None, now: float) -> dict[str, Any]:
    """One meter's block of the Status view (JSON and template alike). The decoder's error
    messages carry their advice ("check the meter's key ..."); ``text`` is the tap's view."""
    if status is None:
        return {"counters": {}, "last_error": None, "last_error_kind": None,
                "status_age_s": None, "last_push_age_s": None if age is None else round(age, 1),
                "text": None}
    from meterpipe.publishers.tap import format_status

    return {
        "counters": dict(status.counters),
        "last_error": status.last_error,
        "last_error_kind": status.last_error_kind,
        "status_age_s": round(max(0.0, now - status.sent_ns / 1e9), 1),
        "last_push_age_s": None if age is None else round(age, 1),
        "text": format_status(status),
    }
