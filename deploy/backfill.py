"""The demo's history backfill: days of simulated pushes, decoded and stored beside the live start.

So that the charts are not empty on first sight, ``meterpipe demo`` first plays
each simulated meter from ``--history-days`` ago (or from where its state file
says the last demo stopped) up to now, one push every ``STEP_S`` seconds of
meter time. Each push takes the real path as far as it can without a clock:
the simulator's bytes, the decoder's :class:`~meterpipe.decoder.session.MeterDecoder`,
and the history process's :class:`~meterpipe.publishers.history.store.HistoryWriter`.

Two steps, so that the live pipeline need not wait for the second:

1. :func:`simulate` (about a second for a week of two meters) plays the meters
   and leaves the registers they end with in their state files, where the live
   simulators start (``meterpipe simulate --state``): no register goes down.
2. :func:`store` decodes and writes the pushes while the live pipeline starts;
   the history process starts after it (it is the only writer from then on) and
   asks the decoder to replay the live pushes it missed meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from meterpipe.common.config import Config
from meterpipe.common.schema import LinkLayer, ReadingsMessage
from meterpipe.common.values import Push
from meterpipe.decoder.session import MeterDecoder
from meterpipe.simulator.meter import MeterSimulator
from meterpipe.simulator.state import MeterState, load_state, save_state

STEP_S = 60  # one push a minute of meter time: a minute row each, a week in a few seconds
FLUSH_EVERY = 2000  # pushes per transaction


@dataclass(frozen=True, slots=True)
class BackfillMeter:
    name: str
    model: str
    state_file: Path


@dataclass(slots=True)
class Played:
    """One meter's simulated pushes: receive time (unix s) and link-layer frames of each."""

    meter: BackfillMeter
    pushes: list[tuple[float, tuple[bytes, ...]]] = field(default_factory=list)


def simulate(meters: Sequence[BackfillMeter], days: float, now: float | None = None) -> list[Played]:
    """Play each meter from ``days`` ago (or its state file's time) up to ``now``; save its state."""
    end = time.time() if now is None else now
    played = []
    for meter in meters:
        state = load_state(meter.state_file)
        start = end - days * 86400
        if state is not None:
            start = max(start, state.time + STEP_S)
        simulator = MeterSimulator(meter.model, start_registers=state.registers if state is not None else None)
        one = Played(meter)
        when = start
        while when < end:
            one.pushes.append((when, simulator.push(datetime.fromtimestamp(when).astimezone()).frames))
            when += STEP_S
        if one.pushes:
            save_state(meter.state_file, MeterState(simulator.registers(), one.pushes[-1][0]))
        played.append(one)
    return played


def store(config: Config, played: Sequence[Played]) -> int:
    """Decode the played pushes and write them into the history database; the pushes stored."""
    from meterpipe.publishers.history.store import HistoryWriter  # only the demo needs it

    history = config.publishers.history
    writer = HistoryWriter(history.path, config.web.zone, minute_retention_days=history.minute_retention_days,
                           recent_hours=history.recent_hours)
    stored = 0
    try:
        for one in played:
            decoder = MeterDecoder(one.meter.name, link=LinkLayer.HDLC, model=one.meter.model)
            for when, frames in one.pushes:
                for frame in frames:
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
    """Both steps at once (tests, benchmarks): the pushes stored."""
    return store(config, simulate(meters, days, now))
