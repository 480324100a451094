"""The demo's history backfill: days of simulated pushes, decoded and stored before the live start.

So that the charts are not empty on first sight, ``meterpipe demo`` first plays
each simulated meter from ``--history-days`` ago (or from where its state file
says the last demo stopped) up to now, one push every ``STEP_S`` seconds of
meter time. Each push takes the real path as far as it can without a clock:
the simulator's bytes, the decoder's :class:`~meterpipe.decoder.session.MeterDecoder`,
and the history process's :class:`~meterpipe.publishers.history.store.HistoryWriter`.
The registers the simulator ends with go to its state file, where the live
simulator starts (``meterpipe simulate --state``), so no register goes down.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from meterpipe.common.config import Config
from meterpipe.common.schema import LinkLayer, ReadingsMessage
from meterpipe.common.values import Push
from meterpipe.decoder.session import MeterDecoder
from meterpipe.simulator.meter import MeterSimulator
from meterpipe.simulator.state import MeterState, load_state, save_state

if TYPE_CHECKING:
    from meterpipe.publishers.history.store import HistoryWriter

STEP_S = 60  # one push a minute of meter time: a minute row each, a week in a few seconds
FLUSH_EVERY = 2000  # pushes per transaction


@dataclass(frozen=True, slots=True)
class BackfillMeter:
    name: str
    model: str
    state_file: Path


def backfill(config: Config, meters: Sequence[BackfillMeter], days: float, now: float | None = None) -> int:
    """Fill the history with ``days`` of pushes of each meter up to ``now``; the pushes stored."""
    from meterpipe.publishers.history.store import HistoryWriter  # only the demo needs it

    end = time.time() if now is None else now
    history = config.publishers.history
    writer = HistoryWriter(history.path, config.web.zone, minute_retention_days=history.minute_retention_days,
                           recent_hours=history.recent_hours)
    stored = 0
    try:
        for meter in meters:
            stored += _one_meter(writer, meter, end - days * 86400, end)
    finally:
        writer.close()
    return stored


def _one_meter(writer: HistoryWriter, meter: BackfillMeter, start: float, end: float) -> int:
    state = load_state(meter.state_file)
    if state is not None:
        start = max(start, state.time + STEP_S)
    simulator = MeterSimulator(meter.model, start_registers=state.registers if state is not None else None)
    decoder = MeterDecoder(meter.name, link=LinkLayer.HDLC, model=meter.model)
    seq = 0
    when = start
    last_time = state.time if state is not None else 0.0
    while when < end:
        pushed = simulator.push(datetime.fromtimestamp(when).astimezone())
        for frame in pushed.frames:
            for outcome in decoder.feed_frame(frame, LinkLayer.HDLC):
                if isinstance(outcome, Push):
                    seq += 1
                    writer.add(ReadingsMessage(meter.name, seq, int(when * 1e9), outcome))
        last_time = when
        if seq % FLUSH_EVERY == 0:
            writer.flush()
        when += STEP_S
    writer.flush()
    if last_time:
        save_state(meter.state_file, MeterState(simulator.registers(), last_time))
    return seq
