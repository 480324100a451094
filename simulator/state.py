"""A simulated meter's registers kept in a file, so that a restarted simulator carries on.

``meterpipe simulate --state FILE`` starts from the registers in FILE (when it
exists) and rewrites it every few seconds and at the end, atomically. The demo's
history backfill writes the same file, so the live meter starts where the
backfilled week ended and no register ever goes down.

The file is JSON: ``{"registers": {"ai": Wh, "ae": Wh, "ri": varh, "re": varh}, "time": <unix s>}``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from meterpipe.simulator.loadcurve import EnergyRegisters


@dataclass(frozen=True, slots=True)
class MeterState:
    registers: dict[str, int]
    time: float  # unix seconds of the push the registers belong to


def load_state(path: Path) -> MeterState | None:
    """The state in ``path``; None when it does not exist. Raises ValueError when it is unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror}") from exc
    try:
        obj = json.loads(text)
        registers = {q: int(obj["registers"][q]) for q in EnergyRegisters.QUANTITIES}
        when = float(obj["time"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a simulator state file ({type(exc).__name__})") from exc
    if min(registers.values()) < 0:
        raise ValueError(f"{path}: a register is negative")
    return MeterState(registers, when)


def save_state(path: Path, state: MeterState) -> None:
    """Write ``state`` atomically: after a crash or a power cut, the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(json.dumps({"registers": state.registers, "time": state.time}))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
