"""``meterpipe-web``: serve the local web page (run by supervisord as ``python -m meterpipe.web.main``).

    python -m meterpipe.web.main --config meterpipe.toml [-v]

Exit codes: 0 after SIGTERM/SIGINT and when ``[web] enabled = false``; 2 for a bad
config (one line naming the setting); 3 when the listen address is taken. At rest
the process sleeps in the event loop: uvicorn's 10-per-second housekeeping tick is
replaced by a wait for the stop signal (no Date header, so nothing to refresh).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from types import FrameType

import uvicorn

from meterpipe.common.config import Config
from meterpipe.common.logs import setup_logging
from meterpipe.common.process import (
    EXIT_RESTART,
    EXIT_UNAVAILABLE,
    base_parser,
    freeze_startup_heap,
    load_config_or_exit,
)
from meterpipe.web.app import build_app
from meterpipe.web.auth import PasswordFile
from meterpipe.web.live import LiveHub
from meterpipe.web.site import Site
from meterpipe.web.store import HistoryStore

log = logging.getLogger(__name__)


class QuietServer(uvicorn.Server):
    """uvicorn's server, waiting for the stop signal instead of ticking every 0.1 s."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None] = lambda: None) -> None:
        super().__init__(config)
        self._on_exit = on_exit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        await self.on_tick(0)
        while not self.should_exit:
            try:
                await asyncio.wait_for(self._wake.wait(), 3600)
            except TimeoutError:
                pass
        self._on_exit()  # end the SSE streams, which would keep the shutdown waiting

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Like uvicorn's, but the signal is not raised again after the shutdown: a stop by
        SIGTERM is a clean exit 0, which supervisord's ``exitcodes`` expects."""
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)


def make_site(config: Config, endpoint: str | None = None) -> Site:
    web = config.web
    return Site(
        web=web,
        meters=tuple(m.name for m in config.meters),
        hub=LiveHub(endpoint if endpoint is not None else config.endpoints.readings),
        store=HistoryStore(config.publishers.history.path, web.zone),
        passwords=PasswordFile(web.password_file),
        config_path=str(config.source) if config.source is not None else "FILE",
        config=config,
        applied=config,
    )


def server_for(site: Site, *, port: int | None = None) -> QuietServer:
    app = build_app(site)
    uv = uvicorn.Config(app, host=site.web.host, port=site.web.port if port is None else port,
                        log_config=None, access_log=False, server_header=False, date_header=False,
                        proxy_headers=False, lifespan="on", loop="asyncio", http="h11", ws="none",
                        interface="asgi3", timeout_graceful_shutdown=3)
    return QuietServer(uv, on_exit=site.hub.close_clients)


def main(argv: Sequence[str] | None = None) -> int:
    args = base_parser("meterpipe-web", "Serve the local web page: live values, history, costs.").parse_args(argv)
    setup_logging(args.verbose, name="web")
    config = load_config_or_exit(args.config)
    web = config.web
    if not web.enabled:
        log.info("web page disabled in config ([web] enabled = false)")
        return 0
    site = make_site(config)
    host = f"[{web.host}]" if ":" in web.host else web.host
    if web.loopback_only:
        log.info("serving http://%s:%s/ (loopback only: open to local users)", host, web.port)
    else:
        log.info("serving http://%s:%s/ (%s); sign-in required", host, web.port,
                 "password set" if site.passwords.exists() else "NO PASSWORD SET YET: no data is served until "
                 f"'{site.set_password_command()}'")
    server = server_for(site)
    freeze_startup_heap()
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits 1 when it cannot bind
        log.error("cannot listen on %s:%s (taken, or not an address of this host)", host, web.port)
        return EXIT_UNAVAILABLE if exc.code else 0
    if not server.started:
        return EXIT_UNAVAILABLE
    if site.exit_after_response:  # the settings page changed the web section: supervisord restarts us
        return EXIT_RESTART
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
