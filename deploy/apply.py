"""What a config change means for the running programs: the old config and the new in, a Plan out.

The settings page writes a new ``meterpipe.toml`` and applies it without restarting
the programs it does not concern. :func:`plan` decides which (sans-IO: two
:class:`~meterpipe.common.config.Config` in, a :class:`Plan` out);
:mod:`meterpipe.deploy.control` carries the plan out over supervisord's control socket.

What each program reads, and so what restarts it:

* a reader (``reader-<meter>``): its meter's port settings, link layer and queue, and the
  endpoints;
* the decoder: every meter's keys, link layer, model and push interval, which it re-reads
  on SIGHUP without a restart (decoder/main.py), and the endpoints, which it binds;
* a publisher: its ``[publishers.<name>]`` section and the endpoints; history also the time
  zone (it books local days), MQTT also the CSV directory while its spool sits beside it;
* the web page (which restarts itself, after its answer): ``[web]``, the endpoints and the
  history database's path.

A plan names programs only, never a setting's value: its :meth:`Plan.lines` are safe to
show and to log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meterpipe.common.config import Config, MeterConfig
from meterpipe.decoder.service import DECODER_FIELDS  # what the decoder re-reads on SIGHUP
from meterpipe.deploy.programs import PUBLISHERS, priority, reader_program

DECODER = "decoder"
WEB = "web"
# The settings of a meter that its reader reads, and those the decoder reads.
READER_FIELDS = ("port", "baudrate", "parity", "bytesize", "stopbits", "queue_frames", "link")


@dataclass(frozen=True, slots=True)
class Plan:
    """The programs a config change concerns; every tuple in start order (lowest priority first)."""

    add: tuple[str, ...] = ()  # programs to add and start (reader-<m> of a new meter)
    remove: tuple[str, ...] = ()  # programs to stop and remove (reader of a removed meter)
    restart: tuple[str, ...] = ()  # programs to restart (never "web")
    start: tuple[str, ...] = ()  # publishers switched on
    stop: tuple[str, ...] = ()  # publishers switched off
    hup_decoder: bool = False  # the decoder re-reads its meters (SIGHUP)
    restart_web: bool = False  # the web process restarts itself after answering (the web code does it)
    # Why, per program ("decoder" for the SIGHUP, "web" for the web page): for lines() only.
    reasons: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if WEB in self.restart or WEB in self.add or WEB in self.remove:
            raise ValueError("the web page restarts itself (restart_web), never through the plan's programs")
        named = [*self.add, *self.remove, *self.restart, *self.start, *self.stop]
        if len(named) != len(set(named)):
            raise ValueError("a program appears in more than one step of the plan")

    def empty(self) -> bool:
        return not (self.add or self.remove or self.restart or self.start or self.stop
                    or self.hup_decoder or self.restart_web)

    def reason(self, program: str) -> str:
        return dict(self.reasons).get(program, "")

    def lines(self) -> list[str]:
        """One line a person reads per step: ``start reader-garage (new meter)``; never a value."""
        out: list[str] = []
        steps = (("stop and remove", self.remove), ("stop", self.stop), ("restart", self.restart),
                 ("start", self.add), ("start", self.start))
        for verb, names in steps:
            out += [_line(f"{verb} {name}", self.reason(name)) for name in names]
        if self.hup_decoder:
            out.append(_line("the decoder re-reads its meters", self.reason(DECODER)))
        if self.restart_web:
            out.append(_line("the web page restarts", self.reason(WEB)))
        return out


def _line(text: str, reason: str) -> str:
    return f"{text} ({reason})" if reason else text


class _Builder:
    def __init__(self) -> None:
        self.steps: dict[str, str] = {}  # program -> "add" | "remove" | "restart" | "start" | "stop"
        self.why: dict[str, list[str]] = {}
        self.hup = False
        self.web = False

    def note(self, program: str, reason: str) -> None:
        reasons = self.why.setdefault(program, [])
        if reason not in reasons:
            reasons.append(reason)

    def step(self, program: str, kind: str, reason: str) -> None:
        # "add", "remove", "start" and "stop" say more than "restart": they win.
        if self.steps.get(program) in (None, "restart", kind):
            self.steps[program] = kind
            self.note(program, reason)

    def plan(self) -> Plan:
        def of(kind: str) -> tuple[str, ...]:
            return tuple(sorted((p for p, k in self.steps.items() if k == kind), key=lambda p: (priority(p), p)))

        hup = self.hup and self.steps.get(DECODER) != "restart"  # a restarted decoder reads them anyway
        keep = set(self.steps) | ({DECODER} if hup else set()) | ({WEB} if self.web else set())
        reasons = tuple((p, "; ".join(r)) for p, r in self.why.items() if p in keep)
        return Plan(add=of("add"), remove=of("remove"), restart=of("restart"), start=of("start"),
                    stop=of("stop"), hup_decoder=hup, restart_web=self.web, reasons=reasons)


def plan(old: Config, new: Config) -> Plan:
    """What to do to the running programs so that they run ``new`` instead of ``old``."""
    b = _Builder()
    _meters(b, old.meters, new.meters)
    _publishers(b, old, new)
    if old.web != new.web:
        b.web = True
        b.note(WEB, "web settings changed")
    if old.publishers.history.path != new.publishers.history.path:
        b.web = True
        b.note(WEB, "history database moved")
    if old.endpoints != new.endpoints:
        _endpoints(b, old, new)
    return b.plan()


def _changed(old: Any, new: Any, names: Iterable[str]) -> list[str]:
    return [name for name in names if getattr(old, name) != getattr(new, name)]


def _meters(b: _Builder, old: Iterable[MeterConfig], new: Iterable[MeterConfig]) -> None:
    before: Mapping[str, MeterConfig] = {m.name: m for m in old}
    after: Mapping[str, MeterConfig] = {m.name: m for m in new}
    for name in after.keys() - before.keys():
        b.step(reader_program(name), "add", "new meter")
        b.hup = True
        b.note(DECODER, f"new meter {name}")
    for name in before.keys() - after.keys():
        b.step(reader_program(name), "remove", "meter removed")
        b.hup = True
        b.note(DECODER, f"meter {name} removed")
    for name in sorted(after.keys() & before.keys()):
        reader = _changed(before[name], after[name], READER_FIELDS)
        if reader:
            b.step(reader_program(name), "restart", f"{', '.join(reader)} changed")
        decoder = _changed(before[name], after[name], DECODER_FIELDS)
        if decoder:
            b.hup = True
            b.note(DECODER, f"{', '.join(decoder)} of meter {name} changed")
    if DECODER in b.why:
        b.why[DECODER].sort()


def _publishers(b: _Builder, old: Config, new: Config) -> None:
    for name in PUBLISHERS:
        was, now = getattr(old.publishers, name), getattr(new.publishers, name)
        if not was.enabled and now.enabled:
            b.step(name, "start", "switched on")
        elif was.enabled and not now.enabled:
            b.step(name, "stop", "switched off")
        elif now.enabled and was != now:
            b.step(name, "restart", f"[publishers.{name}] changed")
    history = new.publishers.history
    if old.publishers.history.enabled and history.enabled and old.web.timezone != new.web.timezone:
        b.step("history", "restart", "time zone changed")
    mqtt = new.publishers.mqtt
    moved = old.publishers.csv.directory.parent != new.publishers.csv.directory.parent
    if old.publishers.mqtt.enabled and mqtt.enabled and mqtt.spool_path is None and moved:
        b.step("mqtt", "restart", "its spool moves with the CSV directory")


def _endpoints(b: _Builder, old: Config, new: Config) -> None:
    reason = "endpoints changed"
    b.step(DECODER, "restart", reason)
    for name in PUBLISHERS:
        if getattr(old.publishers, name).enabled and getattr(new.publishers, name).enabled:
            b.step(name, "restart", reason)
    kept = {m.name for m in old.meters} & {m.name for m in new.meters}
    for name in sorted(kept):
        b.step(reader_program(name), "restart", reason)
    b.web = True
    b.note(WEB, reason)
