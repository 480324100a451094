"""Save a wanted config and apply it to the running processes: what the page and the API share.

One save at a time (``site.editing``). The file is validated and written by
:func:`meterpipe.common.config_file.save`; the change is planned from the old and the
new config (:mod:`meterpipe.deploy.apply`) and carried out by the supervisord that runs
us, over its unix socket, so only the programs the change concerns restart. A change of
the web page itself ends this process after the answer is sent (exit code
:data:`EXIT_RESTART`, which supervisord restarts). Every save is logged with the names
of the settings that changed, never a secret's value.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import Request

from meterpipe.common.config import Config
from meterpipe.common.config_edit import public_view
from meterpipe.common.config_file import plain, read_tables
from meterpipe.common.errors import ConfigError, MeterpipeError
from meterpipe.web.site import Site, site_of

log = logging.getLogger(__name__)

EXIT_RESTART = 75  # not in supervisord's exitcodes: it starts the web page again at once


@dataclass(slots=True)
class Outcome:
    changed: tuple[str, ...] = ()
    applied: list[str] = field(default_factory=list)
    restart_web: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"ok": True, "changed": list(self.changed), "applied": self.applied,
                "web_restarts": self.restart_web}


def config_path(site: Site) -> Path:
    if site.config is None or site.config.source is None:
        raise ConfigError("config", "this web page was started without a config file: nothing to edit")
    return Path(site.config.source)


async def current_view(site: Site) -> tuple[dict[str, Any], Config]:
    """The file as it is now (re-read: it may have been edited by hand) and its public view."""
    path = config_path(site)
    loop = asyncio.get_running_loop()
    _, doc = await loop.run_in_executor(None, read_tables, path)
    assert site.config is not None
    return public_view(plain(doc), site.config), site.config


def client(request: Request) -> str:
    return request.client.host if request.client else "?"


async def save_and_apply(request: Request, wanted: Mapping[str, Any]) -> Outcome:
    """Validate and write ``wanted``, then restart what it affects. Raises ConfigError (nothing
    written) for a config the processes would refuse."""
    from meterpipe.common.config_file import save

    site = site_of(request)
    async with site.editing:
        path = config_path(site)
        old = site.config
        assert old is not None
        loop = asyncio.get_running_loop()
        new, edit = await loop.run_in_executor(None, save, path, wanted)
        log.info("settings saved from %s: %s", client(request), "; ".join(edit.changed) or "no change")
        site.config = new
        site.meters = tuple(m.name for m in new.meters)
        outcome = Outcome(changed=edit.changed)
        await _apply(site, old, new, outcome)
        for line in outcome.applied:
            log.info("settings applied: %s", line)
        return outcome


async def _apply(site: Site, old: Config, new: Config, outcome: Outcome) -> None:
    from meterpipe.deploy.apply import plan
    from meterpipe.deploy.control import Supervisor, runtime_dir_from_env
    from meterpipe.deploy.programs import programs_conf

    steps = plan(old, new)
    if steps.empty():
        outcome.applied.append("nothing to restart")
        return
    rundir = runtime_dir_from_env()
    if rundir is None:
        outcome.applied.append("saved; not started by 'meterpipe run', so restart meterpipe to apply it")
        return
    loop = asyncio.get_running_loop()
    try:
        done = await loop.run_in_executor(None, Supervisor(rundir).apply, steps, programs_conf(new))
    except MeterpipeError as exc:
        outcome.applied.append(f"saved, but not applied: {exc.message}")
        return
    outcome.applied.extend(done)
    site.processes.forget()
    if steps.restart_web:
        outcome.restart_web = True
        site.exit_after_response = True
        outcome.applied.append("the web page restarts with its new settings now")


async def restart_if_asked(site: Site) -> None:
    """A background task after the answer: end this process for supervisord to restart it."""
    if not site.exit_after_response:
        return
    import os
    import signal

    await asyncio.sleep(0.3)  # let the answer leave
    log.info("restarting the web page for its new settings")
    os.kill(os.getpid(), signal.SIGTERM)
