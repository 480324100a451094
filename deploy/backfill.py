"""The demo's history backfill: days of simulated pushes, decoded and stored beside the live start.

So that the charts are not empty on first sight, ``meterpipe demo`` first plays
each simulated meter from ``--history-days`` ago (or from where its state file
says the last demo stopped) up to now, one push every ``STEP_S`` seconds of
meter time. Each push takes the real path as far as it can without a clock:
the simulator's bytes, the decoder's :class:`~meterpipe.decoder.session.MeterDecoder`,
and the history process's :class:`~meterpipe.publishers.history.store.HistoryWriter`.

Two passes over the same deterministic simulation, so that the live pipeline
need not wait for the second and nothing is held in memory:

1. :func:`plan` plays the meters to learn the registers they end with and
   leaves them in their state files, where the live simulators start
   (``meterpipe simulate --state``): no register goes down. About a second
   for a week of two meters.
2. :func:`store` plays them again from the same start, decodes each push and
   writes it, while the live pipeline starts; the history process starts after
   it (the only writer from then on) and asks the decoder to replay the live
   pushes it missed meanwhile.

A meter the history database does not hold starts afresh (its state file is
ignored), so a deleted database is filled again rather than left empty.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from meterpipe.common.config import Config
from meterpipe.common.schema import LinkLayer, ReadingsMessage
from meterpipe.common.values import Push
from meterpipe.decoder.session import MeterDecoder
from meterpipe.simulator.meter import MeterSimulator, SimulatedPush
from meterpipe.simulator.state import MeterState, load_state, save_state

STEP_S = 60  # one push a minute of meter time: a minute row each, a week in a few seconds
FLUSH_EVERY = 2000  # pushes per transaction


@dataclass(frozen=True, slots=True)
class BackfillMeter:
    name: str
    model: str
    state_file: Path


@dataclass(frozen=True, slots=True)
class Planned:
    """One meter's backfill: a push every ``STEP_S`` from ``start`` up to ``end`` (unix s), the
    simulator starting from ``registers`` (None: its own start values)."""

    meter: BackfillMeter
    start: float
    end: float
    registers: dict[str, int] | None


def play(planned: Planned) -> Iterator[tuple[float, MeterSimulator, SimulatedPush]]:
    """The pushes of a backfill, the same ones each time (the simulator is deterministic)."""
    simulator = MeterSimulator(planned.meter.model, start_registers=planned.registers)
    when = planned.start
    while when < planned.end:
        yield when, simulator, simulator.push(datetime.fromtimestamp(when).astimezone())
        when += STEP_S


def plan(config: Config, meters: Sequence[BackfillMeter], days: float, now: float | None = None) -> list[Planned]:
    """Where each meter's backfill starts and ends; the registers it ends with go to its state file."""
    end = time.time() if now is None else now
    held = _held_meters(config)
    plans = []
    for meter in meters:
        state = _state(meter) if meter.name in held else None
        start = end - days * 86400
        if state is not None:
            start = max(start, state.time + STEP_S)
        one = Planned(meter, start, end, state.registers if state is not None else None)
        last: tuple[float, MeterSimulator] | None = None
        for when, simulator, _ in play(one):
            last = when, simulator
        if last is not None:
            save_state(meter.state_file, MeterState(last[1].registers(), last[0]))
        plans.append(one)
    return plans


def store(config: Config, plans: Sequence[Planned]) -> int:
    """Play the planned pushes again, decode them and write them into the history; the pushes stored."""
    from meterpipe.publishers.history.store import HistoryWriter  # only the demo needs it

    writer = HistoryWriter.from_config(config)
    stored = 0
    try:
        for one in plans:
            decoder = MeterDecoder(one.meter.name, link=LinkLayer.HDLC, model=one.meter.model)
            for when, _, pushed in play(one):
                for frame in pushed.frames:
                    for outcome in decoder.feed_frame(frame, LinkLayer.HDLC):
                        if isinstance(outcome, Push):
                            stored += 1
                            writer.add(ReadingsMessage(one.meter.name, stored, int(when * 1e9), outcome))
                            if stored % FLUSH_EVERY == 0:
                                writer.flush()
    finally:
        writer.close()
    return stored


def backfill(config: Config, meters: Sequence[BackfillMeter], days: float, now: float | None = None) -> int:
    """Both passes at once (tests, benchmarks): the pushes stored."""
    return store(config, plan(config, meters, days, now))


def _state(meter: BackfillMeter) -> MeterState | None:
    try:
        return load_state(meter.state_file)
    except ValueError as exc:
        print(f"meterpipe demo: {exc}; meter {meter.name} starts afresh", flush=True)
        return None


def _held_meters(config: Config) -> set[str]:
    """The meters the history database holds (none when it does not exist yet)."""
    from meterpipe.publishers.history.query import HistoryReader

    reader = HistoryReader(config.publishers.history.path, config.web.zone)
    try:
        return {m.name for m in reader.meters()}
    finally:
        reader.close()
