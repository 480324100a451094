"""The values a simulated meter measures: a plausible household on three phases.

:class:`LoadCurve` draws the instantaneous quantities of each push as a
:class:`Sample` (base load, morning/noon/evening peaks, maybe PV feeding in);
:class:`EnergyRegisters` integrates their power into energy registers that never
go back; :func:`scale` turns a base-unit value into the register of a field.
All randomness comes from ``random.Random`` generators the caller seeds, and the
time of each sample is the caller's too, so a simulation is reproducible.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Final

from meterpipe.simulator.models import BASE_EXPONENT, CURRENTS, ENERGIES, VOLTAGES

_MS_PER_HOUR: Final = 3_600_000
# The power each energy register integrates.
_POWER_OF: Final = MappingProxyType({"ai": "pi", "ae": "pe", "ri": "qi", "re": "qe"})


@dataclass(frozen=True, slots=True)
class Sample:
    """The instantaneous quantities of one push, in base units (W, var, dV, mA)."""

    active_import_w: int
    active_export_w: int
    reactive_import_var: int
    reactive_export_var: int
    voltage_dv: tuple[int, int, int]
    current_ma: tuple[int, int, int]

    def base_value(self, quantity: str) -> int:
        if quantity in VOLTAGES:
            return self.voltage_dv[VOLTAGES.index(quantity)]
        if quantity in CURRENTS:
            return self.current_ma[CURRENTS.index(quantity)]
        return {
            "pi": self.active_import_w,
            "pe": self.active_export_w,
            "qi": self.reactive_import_var,
            "qe": self.reactive_export_var,
        }[quantity]


def _bump(hour: float, centre: float, width: float) -> float:
    return math.exp(-(((hour - centre) / width) ** 2))


class LoadCurve:
    """A household on three phases: base load, morning/noon/evening peaks, maybe PV.

    Deterministic: the parameters are drawn once from ``rng``, the noise of each
    sample from the generator passed to :meth:`sample`.
    """

    def __init__(self, rng: random.Random) -> None:
        self.base_w = rng.uniform(120.0, 320.0)
        self.peak_w = rng.uniform(1500.0, 3500.0)
        self.pv_peak_w = rng.choice((0.0, rng.uniform(2500.0, 7000.0)))
        shares = [rng.uniform(0.6, 1.4) for _ in range(3)]
        self.shares = tuple(s / sum(shares) for s in shares)
        self.nominal_dv = tuple(rng.randint(2290, 2345) for _ in range(3))
        self.power_factor = rng.uniform(0.90, 0.98)

    def household_w(self, hour: float) -> float:
        return self.base_w + self.peak_w * (
            0.55 * _bump(hour, 7.3, 0.9) + 0.35 * _bump(hour, 12.2, 1.0) + 1.0 * _bump(hour, 19.0, 1.6)
        )

    def pv_w(self, hour: float, cloud: float) -> float:
        if not 6.0 < hour < 20.0:
            return 0.0
        return self.pv_peak_w * math.sin(math.pi * (hour - 6.0) / 14.0) ** 2 * cloud

    def sample(self, now: datetime, noise: random.Random) -> Sample:
        hour = now.hour + now.minute / 60 + now.second / 3600
        load = self.household_w(hour) * noise.lognormvariate(0.0, 0.12)
        if noise.random() < 0.04:  # a kettle, an oven, a heat pump starting
            load += noise.uniform(800.0, 2500.0)
        pv = self.pv_w(hour, noise.uniform(0.55, 1.0))
        net_phase = [load * s - pv / 3 for s in self.shares]
        volts_dv = []
        amps_ma = []
        for nominal, net in zip(self.nominal_dv, net_phase):
            dv = nominal + noise.gauss(0.0, 6.0) - 0.004 * net  # ~0.4 ohm line drop
            dv = min(max(dv, 2070.0), 2530.0)
            volts_dv.append(round(dv))
            amps_ma.append(round(abs(net) / (dv / 10) / self.power_factor * 1000))
        total = sum(net_phase)
        tan_phi = math.tan(math.acos(self.power_factor))
        reactive = abs(total) * tan_phi
        return Sample(
            active_import_w=round(max(total, 0.0)),
            active_export_w=round(max(-total, 0.0)),
            reactive_import_var=round(reactive if total > 0 else 0.0),
            reactive_export_var=round(reactive if total <= 0 else 0.0),
            voltage_dv=(volts_dv[0], volts_dv[1], volts_dv[2]),
            current_ma=(amps_ma[0], amps_ma[1], amps_ma[2]),
        )


class EnergyRegisters:
    """The energy registers of a meter, fed the sample of each push (trapezoidal integral).

    Kept in W*ms: exact integers, so the registers never go back.
    """

    QUANTITIES = ("ai", "ae", "ri", "re")

    def __init__(self, import_wh: int, export_wh: int, start: Mapping[str, int] | None = None) -> None:
        """Registers from the import/export start values, or exactly ``start`` (Wh per quantity)."""
        if start is None:
            start = {"ai": import_wh, "ae": export_wh, "ri": import_wh // 7, "re": import_wh // 3}
        self._acc = {q: int(start[q]) * _MS_PER_HOUR for q in self.QUANTITIES}
        self._last: tuple[datetime, Sample] | None = None

    def snapshot(self) -> dict[str, int]:
        """Every register in Wh (varh): what a continuation starts from."""
        return {q: self.wh(q) for q in self.QUANTITIES}

    def advance(self, now: datetime, sample: Sample) -> None:
        """Add the energy from the previous sample up to ``sample`` at ``now``."""
        if self._last is not None:
            then, before = self._last
            elapsed_ms = max((now - then) // timedelta(milliseconds=1), 0)
            for energy, power in _POWER_OF.items():
                mean_w = (before.base_value(power) + sample.base_value(power)) // 2
                self._acc[energy] += mean_w * elapsed_ms
        self._last = (now, sample)

    def wh(self, quantity: str) -> int:
        """The register of ``quantity`` (``ai``, ``ae``, ``ri``, ``re``) in Wh (varh), truncated."""
        return self._acc[quantity] // _MS_PER_HOUR


def scale(base: int, quantity: str, exponent: int) -> int:
    """A base-unit value as the register of a field with decimal ``exponent``.

    Energies are truncated (a meter's register shows what has been completed),
    the rest rounded half up.
    """
    shift = exponent - BASE_EXPONENT[quantity]
    if shift <= 0:
        return base * int(10**-shift)
    div = int(10**shift)
    if quantity in ENERGIES:
        return base // div
    return (base * 2 + div) // (2 * div)
