"""Save a wanted config and apply it to the running processes: what the page and the API share.

One save at a time (``site.editing``). The file is validated and written by
:func:`meterpipe.common.config_file.save`; the change is planned from the old and the
new config (:mod:`meterpipe.deploy.apply`) and carried out by the supervisord that runs
us, over its unix socket, so only the programs the change concerns restart. A change of
the web page itself ends this process after the answer is sent (exit code
:data:`~meterpipe.common.process.EXIT_RESTART`, which supervisord restarts). Every save is logged with the names
of the settings that changed, never a secret's value.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import Request

from meterpipe.common.config import Config, load_config
from meterpipe.common.config_edit import public_view
from meterpipe.common.config_file import Upload, plain, read_tables
from meterpipe.common.errors import ConfigError, MeterpipeError
from meterpipe.web.guard import client_address
from meterpipe.web.site import Site, site_of

log = logging.getLogger(__name__)

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
    try:  # fingerprints of what the file holds now, hand edits included
        config = await loop.run_in_executor(None, load_config, path)
    except ConfigError:  # a hand edit broke it: the page shows the loader's message on the next save
        assert site.config is not None
        config = site.config
    return public_view(plain(doc), config), config


def can_listen(old: Config) -> Callable[[Config], None]:
    """A check for :func:`~meterpipe.common.config_file.save`: a new ``[web] listen`` must be an
    address this machine can listen on, or the page would restart into nothing (and stay away)."""
    def check(new: Config) -> None:
        host, port = new.web.host, new.web.port
        if (host, port) == (old.web.host, old.web.port) or not new.web.enabled:
            return
        import socket

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise ConfigError("web.listen", f"cannot listen on {host}:{port} here: {exc.strerror or exc} "
                                  "(taken, or not an address of this machine)") from exc
    return check


async def save_and_apply(request: Request, wanted: Mapping[str, Any], uploads: Sequence[Upload] = ()) -> Outcome:
    """Validate and write ``wanted``, then restart what it affects. Raises ConfigError (nothing
    written) for a config the processes would refuse."""
    from meterpipe.common.config_file import save

    site = site_of(request)
    async with site.editing:
        path = config_path(site)
        old = site.applied or site.config  # what the processes run: a save that was not applied counts too
        assert old is not None
        loop = asyncio.get_running_loop()
        new, edit = await loop.run_in_executor(
            None, functools.partial(save, path, wanted, uploads=uploads, check=can_listen(old)))
        log.info("settings saved from %s: %s", client_address(request), "; ".join(edit.changed) or "no change")
        site.config = new
        site.meters = tuple(m.name for m in new.meters)
        outcome = Outcome(changed=edit.changed)
        if await _apply(site, old, new, outcome):
            site.applied = new
        for line in outcome.applied:
            log.info("settings applied: %s", line)
        return outcome


async def _apply(site: Site, old: Config, new: Config, outcome: Outcome) -> bool:
    """Carry out the plan from ``old`` to ``new``; False when nothing could be applied."""
    from meterpipe.deploy.apply import plan
    from meterpipe.deploy.control import Supervisor, runtime_dir_from_env
    from meterpipe.deploy.programs import programs_conf

    steps = plan(old, new)
    if steps.empty():
        outcome.applied.append("nothing to restart")
        return True
    rundir = runtime_dir_from_env()
    if rundir is None:
        outcome.applied.append("saved; not started by 'meterpipe run', so restart meterpipe to apply it")
        return False
    loop = asyncio.get_running_loop()
    try:
        done = await loop.run_in_executor(None, Supervisor(rundir).apply, steps, programs_conf(new))
    except MeterpipeError as exc:
        outcome.applied.append(f"saved, but not applied: {exc.message}")
        return False
    outcome.applied.extend(done)
    site.processes.forget()
    if steps.restart_web:
        outcome.restart_web = True
        site.exit_after_response = True
        outcome.applied.append("the web page restarts with its new settings now")
    return True


async def restart_if_asked(site: Site) -> None:
    """A background task after the answer: end this process for supervisord to restart it."""
    if not site.exit_after_response:
        return
    import os
    import signal

    await asyncio.sleep(0.3)  # let the answer leave
    log.info("restarting the web page for its new settings")
    os.kill(os.getpid(), signal.SIGTERM)
