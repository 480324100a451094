"""What every request handler shares: config, live hub, history store, access state.

One :class:`Site` per app, at ``request.app.state.site``. It holds no secret beyond
the session store (the meter keys of the config are never read here: only names,
the web section and the history path).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from starlette.requests import Request

from meterpipe.common.web_config import WebConfig
from meterpipe.web.auth import LoginLimiter, PasswordFile, Sessions
from meterpipe.web.live import LiveHub
from meterpipe.web.status import ProcessStates
from meterpipe.web.store import HistoryStore

MAX_CHECKS = 2  # password checks at a time (scrypt: 16 MiB each)


@dataclass(slots=True)
class Site:
    web: WebConfig
    meters: tuple[str, ...]  # configured meter names, in config order
    hub: LiveHub
    store: HistoryStore
    passwords: PasswordFile
    sessions: Sessions = field(default_factory=Sessions)
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    processes: ProcessStates = field(default_factory=ProcessStates)
    config_path: str = "FILE"  # shown in "meterpipe web set-password --config FILE"
    checks: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_CHECKS), repr=False)

    @property
    def zone(self) -> ZoneInfo:
        return self.store.zone

    def now(self) -> datetime:
        return datetime.now(self.zone)

    def today(self) -> date:
        return self.now().date()

    def set_password_command(self) -> str:
        return f"meterpipe web set-password --config {self.config_path}"


def site_of(request: Request) -> Site:
    site: Site = request.app.state.site
    return site
