"""Pushes for the history tests: hand-made ones with chosen register values, and the
simulated E450's own pushes decoded by the real decoder."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from meterpipe.common.schema import ReadingsMessage
from meterpipe.common.values import Push, Reading
from meterpipe.publishers.history.store import HistoryWriter

ZURICH = ZoneInfo("Europe/Zurich")
T0 = datetime(2026, 5, 1, 0, 0, tzinfo=ZURICH)  # a local midnight


def ns(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


def msg(t: datetime, import_wh: int, *, export_wh: int = 0, power_w: int = 500, seq: int = 1,
        meter: str = "house", kwh: bool = False, volts: tuple[int, int] = (2301, -1)) -> ReadingsMessage:
    """A push at ``t`` whose import register reads ``import_wh`` (sent as kWh with 3 decimals when ``kwh``)."""
    imp = Reading("1-0:1.8.0", "active_energy_import", import_wh, -3, "kWh") if kwh else \
        Reading("1-0:1.8.0", "active_energy_import", import_wh, 0, "Wh")
    readings = (
        Reading("0-0:42.0.0", "logical_device_name", "LGZ1030655933512"),
        imp,
        Reading("1-0:2.8.0", "active_energy_export", export_wh, 0, "Wh"),
        Reading("1-0:1.7.0", "active_power_import", power_w, 0, "W"),
        Reading("1-0:32.7.0", "voltage_l1", volts[0], volts[1], "V"),
    )
    return ReadingsMessage(meter, seq, ns(t), Push(readings, meter_id="LGZ1030655933512", authenticated=True))


def simulated(start: datetime, count: int, step_s: float, *, meter: str = "house",
              seed: int = 4) -> Iterator[ReadingsMessage]:
    """The simulated E450's pushes every ``step_s`` seconds, decoded by the real decoder."""
    from meterpipe.decoder.session import MeterDecoder
    from meterpipe.simulator.meter import MeterSimulator

    sim = MeterSimulator("e450", seed=seed)
    decoder = MeterDecoder(meter, model="e450")
    for i in range(count):
        t = start + timedelta(seconds=i * step_s)
        (push,) = decoder.feed(sim.push(t.astimezone(ZURICH).replace(tzinfo=None)).data)
        assert isinstance(push, Push)
        yield ReadingsMessage(meter, i + 1, ns(t), push)


def kill(writer: HistoryWriter) -> None:
    """As a SIGKILL leaves it: no flush, no close(); the kernel drops the writer's lock."""
    writer.db.close()
    writer._release()
