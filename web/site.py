"""What every request handler shares: config, live hub, history store, access state.

One :class:`Site` per app, at ``request.app.state.site``. Besides the session store
it holds the loaded config for the settings page (whose secrets are shown as
fingerprints only, by :mod:`meterpipe.common.config_edit`).
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from starlette.requests import Request

from meterpipe.common.config import Config
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
    config: Config | None = field(default=None, repr=False)  # the file as last loaded or saved here
    applied: Config | None = field(default=None, repr=False)  # what the processes run, when it differs
    csrf_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    editing: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)  # one save or probe at a time
    notices: dict[str, list[str]] = field(default_factory=dict, repr=False)  # session -> lines after a save
    exit_after_response: bool = False  # the web settings changed: restart once this answer is out
    paused: set[str] = field(default_factory=set, repr=False)  # readers stopped for a meter test

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
