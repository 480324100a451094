"""The supervisord program table: every meterpipe process, readers and publishers alike.

``meterpipe run`` (and ``meterpipe demo``) turn the config into
``<runtime dir>/programs.conf``, which ``deploy/supervisord.conf`` includes: one
``[program:x]`` per row of :data:`PROGRAMS` and one top-level ``reader-<meter>``
per ``[[meters]]`` entry. No ``[group:...]``: supervisord restarts every member of
a group whose membership changes, and adding a meter on the settings page must
not restart the other meters' readers (deploy/apply.py, deploy/control.py). A
publisher switched off in its ``[publishers.<name>]`` section is written with
``autostart=false``, so ``meterpipe status`` still lists it. Programs that are not
meterpipe's own (the demo's simulators) go into ``extra-programs.conf`` beside it,
so that the settings page can rewrite ``programs.conf`` from the config alone.

Adding a publisher is its module, one row here and its config section.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from meterpipe.common.config import Config

# What every program shares, with the reason for each value.
COMMON_OPTIONS = """\
autorestart=unexpected         ; restart after a crash or a kill, never after a clean stop
exitcodes=0,2                  ; 0 = stopped or disabled, 2 = config error: a restart would not help
stopsignal=TERM                ; handlers only set a stop flag; every loop sees it within 0.5 s
stdout_logfile=/dev/stdout     ; one log: supervisord's stdout (the terminal or the journal)
stdout_logfile_maxbytes=0
redirect_stderr=true           ; config errors and tracebacks land in the same log
"""


@dataclass(frozen=True, slots=True)
class Program:
    """One row of the table: a process kind and how supervisord runs it."""

    name: str  # supervisord program name; readers get "reader-<meter>"
    module: str  # run as ``python -m <module> --config <meterpipe.toml>``
    priority: int  # lower starts first and stops last
    publisher: str | None = None  # the [publishers.<name>] section whose `enabled` decides autostart
    per_meter: bool = False  # one process per [[meters]] entry, with --meter <name>
    startsecs: int = 2  # must stay up this long to count as started
    stopwaitsecs: int = 5  # then SIGKILL; linger is bounded, so this is never needed
    startretries: int = 10  # then FATAL, which `meterpipe status` shows


PROGRAMS: tuple[Program, ...] = (
    # The decoder binds both sockets, so it starts first.
    Program("decoder", "meterpipe.decoder.main", priority=10),
    Program("csv", "meterpipe.publishers.csv_main", priority=20, publisher="csv"),
    # In-flight QoS 1 messages stay in the on-disk spool anyway.
    Program("mqtt", "meterpipe.publishers.mqtt.main", priority=20, publisher="mqtt", stopwaitsecs=10),
    Program("journal", "meterpipe.publishers.journal", priority=20, publisher="journal"),
    # The only writer of the history database; it commits once a minute, so give it time to.
    Program("history", "meterpipe.publishers.history.main", priority=20, publisher="history", stopwaitsecs=10),
    # Reads the history database and the readings socket; serves the local web page.
    Program("web", "meterpipe.web.main", priority=25, publisher="web"),
    # A reader reconnects to its port by itself; 1000 tries outlast a meter unplugged for hours.
    Program("reader", "meterpipe.reader.main", priority=30, per_meter=True, startretries=1000),
)
READER = PROGRAMS[-1]
PUBLISHERS = tuple(p.name for p in PROGRAMS if p.publisher not in (None, "web"))  # csv, mqtt, journal, history
EXTRA_NAME = "extra-programs.conf"  # programs that are not meterpipe's own (the demo's simulators)


def section(
    name: str,
    command: str,
    *,
    priority: int,
    startsecs: int = 2,
    stopwaitsecs: int = 5,
    startretries: int = 10,
    autostart: bool = True,
) -> str:
    """The text of one ``[program:<name>]`` section."""
    return (
        f"[program:{name}]\ncommand={command}\npriority={priority}\n"
        f"autostart={'true' if autostart else 'false'}\n"
        f"startsecs={startsecs}\nstartretries={startretries}\nstopwaitsecs={stopwaitsecs}\n{COMMON_OPTIONS}"
    )


def _section(program: Program, name: str, command: str, *, autostart: bool = True) -> str:
    return section(name, command, priority=program.priority, startsecs=program.startsecs,
                   stopwaitsecs=program.stopwaitsecs, startretries=program.startretries, autostart=autostart)


def _command(program: Program, meter: str | None = None) -> str:
    command = f"%(ENV_METERPIPE_PYTHON)s -m {program.module}"
    if meter is not None:
        command += f" --meter {meter}"
    return command + " --config %(ENV_METERPIPE_CONFIG)s"


def _enabled(program: Program, config: Config) -> bool:
    if program.publisher is None:
        return True
    if program.publisher == "web":  # [web] is a top-level section, not a publisher's
        return config.web.enabled
    return bool(getattr(config.publishers, program.publisher).enabled)


def reader_program(meter: str) -> str:
    """The supervisord program of ``meter``'s reader."""
    return f"{READER.name}-{meter}"


def priority(name: str) -> int:
    """The priority of program ``name`` (a row's name or ``reader-<meter>``): lower starts first."""
    for program in PROGRAMS:
        if name == program.name or (program.per_meter and name.startswith(program.name + "-")):
            return program.priority
    raise KeyError(name)


def programs_conf(config: Config, *, readers: bool = True, held: Iterable[str] = ()) -> str:
    """``programs.conf`` for ``config``: every row of :data:`PROGRAMS` (readers only with
    ``readers``). Programs named in ``held`` do not start with supervisord (the demo starts
    its history after the backfill)."""
    parts = []
    hold = set(held)
    for program in PROGRAMS:
        if not program.per_meter:
            autostart = _enabled(program, config) and program.name not in hold
            parts.append(_section(program, program.name, _command(program), autostart=autostart))
        elif readers:
            for meter in config.meters:
                parts.append(_section(program, reader_program(meter.name), _command(program, meter.name)))
    return "\n".join(parts)
