"""The simulated meter, sans-IO: the caller gives the time, it gives the bytes of the push.

:class:`MeterSimulator` has no clock, port or logging inside. For each push it
draws the values from its :class:`~meterpipe.simulator.loadcurve.LoadCurve`
and energy registers, lays them out as the model does
(:func:`encode_notification`), ciphers the APDU with
:func:`meterpipe.decoder.security.encrypt` when it has a key, and cuts it into
the model's link-layer frames (:func:`encode_frames`). The result, a
:class:`SimulatedPush`, carries the bytes a real meter of that model would write
to its customer interface and the values a decoder must report.

:class:`ReplayMeter` sends a fixed capture instead, for ``--replay``.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from meterpipe.common.config_fields import KEY_BYTES
from meterpipe.common.link import build as link_build
from meterpipe.decoder.security import SC_AUTHENTICATED, SC_ENCRYPTED, encrypt
from meterpipe.simulator import encoding as enc
from meterpipe.simulator.loadcurve import EnergyRegisters, LoadCurve, scale
from meterpipe.simulator.models import ENERGIES, MODELS, TEXTS, Field, ModelSpec

Value = tuple[int | str, int, str | None]


@dataclass(frozen=True, slots=True)
class SimulatedPush:
    """One push: the bytes on the line and what a decoder must make of them."""

    data: bytes
    frames: tuple[bytes, ...]
    values: dict[str, Value]
    meter_id: str
    time: datetime
    invocation_counter: int | None


class Meter(Protocol):
    """What the command drives: a push for each meter time."""

    def push(self, now: datetime) -> SimulatedPush: ...


class MeterSimulator:
    """Pushes of one simulated meter, deterministic for a given seed and times."""

    def __init__(
        self,
        model: str,
        *,
        key: bytes | None = None,
        auth_key: bytes | None = None,
        seed: int = 0,
        serial: str | None = None,
        start_energy_wh: int | None = None,
        start_registers: Mapping[str, int] | None = None,
    ) -> None:
        spec = MODELS.get(model)
        if spec is None:
            raise ValueError(f"unknown meter model {model!r}: choose one of {', '.join(MODELS)}")
        for name, k in (("key", key), ("auth_key", auth_key)):
            if k is not None and len(k) != KEY_BYTES:
                raise ValueError(f"{name} must be {KEY_BYTES} bytes")
        if auth_key is not None and key is None:
            raise ValueError("an authentication key needs an encryption key too")
        if serial is not None and not (0 < len(serial) <= 32 and serial.isascii() and serial.isprintable()):
            raise ValueError("serial must be 1-32 printable ASCII characters")
        if start_energy_wh is not None and start_energy_wh < 0:
            raise ValueError("start_energy_wh must not be negative")
        if start_registers is not None and (
            set(start_registers) != set(EnergyRegisters.QUANTITIES) or min(start_registers.values()) < 0
        ):
            raise ValueError(f"start_registers must give {', '.join(EnergyRegisters.QUANTITIES)} in Wh, none negative")
        self.spec = spec
        self._key = key
        self._auth_key = auth_key
        self.security: int | None = None
        if key is not None:
            self.security = SC_ENCRYPTED | (SC_AUTHENTICATED if auth_key is not None else 0)
        rng = random.Random(f"meterpipe-simulator:{model}:{seed}")
        digits = "".join(str(rng.randrange(10)) for _ in range(spec.id_digits))
        self.meter_id = serial if serial is not None else spec.id_prefix + digits
        self.serial_number = str(rng.randint(1_000_000, 9_999_999))
        tail = "".join(c for c in self.meter_id if c.isdigit())[-9:] or "0"
        self.system_title = spec.title_prefix + (int(tail) % 2**32).to_bytes(4, "big")
        self._curve = LoadCurve(rng)
        start = start_energy_wh if start_energy_wh is not None else rng.randint(50_000, 20_000_000)
        self._energy = EnergyRegisters(start, start // 4 if self._curve.pv_peak_w else 0, start_registers)
        self._noise = random.Random(rng.getrandbits(64))
        self._invoke_id = 0 if spec.invoke_id_fixed else rng.randrange(1, 1 << 24)
        self._ic: int | None = rng.randrange(1, 1 << 22) if key is not None else None

    def registers(self) -> dict[str, int]:
        """The energy registers in Wh (varh) after the last push: ``start_registers`` of a continuation."""
        return self._energy.snapshot()

    @property
    def invocation_counter(self) -> int | None:
        """The counter the next ciphered push will carry (None when unencrypted)."""
        return self._ic

    def push(self, now: datetime) -> SimulatedPush:
        """The push the meter sends at meter time ``now`` (naive: local wall clock)."""
        spec = self.spec
        now = now.replace(microsecond=0)
        sample = self._curve.sample(now, self._noise)
        self._energy.advance(now, sample)
        texts = {"meter_id": self.meter_id, "serial": self.serial_number, "meter_type": spec.meter_type}
        registers: dict[str, int] = {}
        values: dict[str, Value] = {}
        if spec.list_id:
            values[spec.list_id_obis] = (spec.list_id, 0, None)
        for f in spec.readings():
            if f.quantity in TEXTS:
                values[f.obis] = (texts[f.quantity], 0, None)
                continue
            if f.quantity in ENERGIES:
                base = self._energy.wh(f.quantity)
            else:
                base = sample.base_value(f.quantity)
            registers[f.quantity] = scale(base, f.quantity, f.exponent)
            values[f.obis] = (registers[f.quantity], f.exponent, f.unit)
        if spec.clock_deviation:
            clock = enc.cosem_datetime(now, deviation=None)
        else:
            clock = enc.cosem_datetime(now, status=0)
        apdu = encode_notification(
            spec, invoke_id=self._invoke_id, clock=clock, texts=texts, registers=registers
        )
        if not spec.invoke_id_fixed:
            self._invoke_id = (self._invoke_id + 1) % (1 << 24)
        ic = self._ic
        if ic is not None and self._key is not None and self.security is not None:
            apdu = encrypt(
                apdu,
                system_title=self.system_title,
                invocation_counter=ic,
                key=self._key,
                auth_key=self._auth_key,
                security=self.security,
            )
            self._ic = (ic + 1) % (1 << 32)
        frames = tuple(encode_frames(spec, apdu))
        return SimulatedPush(
            data=b"".join(frames),
            frames=frames,
            values=values,
            meter_id=self.meter_id,
            time=now,
            invocation_counter=ic,
        )


class ReplayMeter:
    """A meter that sends the same capture (raw bytes, framing and all) at every push."""

    def __init__(self, capture: bytes) -> None:
        self.capture = capture

    def push(self, now: datetime) -> SimulatedPush:
        return SimulatedPush(self.capture, (self.capture,), {}, "", now.replace(microsecond=0), None)


# --- a push in the model's layout and link layer -------------------------------


@functools.lru_cache(maxsize=512)  # a model's push list never changes: encode each entry once
def _capture_definition(f: Field) -> bytes:
    return enc.structure(
        [enc.u16(f.class_id), enc.octet_string(enc.obis_bytes(f.obis)), enc.i8(f.attribute), enc.u16(0)]
    )


def _value(f: Field, clock: bytes, texts: Mapping[str, str], registers: Mapping[str, int]) -> bytes:
    if f.quantity == "clock":
        return enc.octet_string(clock)
    if f.quantity == "push_name":
        return enc.octet_string(enc.obis_bytes(f.obis))
    if f.quantity in TEXTS:
        text = texts[f.quantity]
        return enc.visible_string(text) if f.tag == 0x0A else enc.octet_string(text.encode("ascii"))
    return enc.integer(f.tag, registers[f.quantity])


def encode_notification(
    spec: ModelSpec,
    *,
    invoke_id: int,
    clock: bytes,
    texts: Mapping[str, str],
    registers: Mapping[str, int],
    object_clock: bytes | None = None,
) -> bytes:
    """The plaintext DataNotification APDU of one push, in the model's real layout.

    ``clock`` is the 12-byte COSEM date-time (the notification's and, where the
    list carries one, the clock object's); ``texts`` maps ``meter_id``/``serial``/
    ``meter_type`` to their text; ``registers`` the numeric quantities to the
    register values as sent (already scaled). ``object_clock`` is the value of
    the clock object when it differs from the notification's date-time.
    """
    value_clock = clock if object_clock is None else object_clock
    if spec.layout == "kamstrup":
        items = [enc.visible_string(spec.list_id)]
        for f in spec.fields:
            items += [enc.octet_string(enc.obis_bytes(f.obis)), _value(f, value_clock, texts, registers)]
        return enc.data_notification(invoke_id, clock, enc.structure(items))
    definitions = _definitions(spec.fields)
    values = [
        definitions if f.quantity == "push_list" else _value(f, value_clock, texts, registers)
        for f in spec.fields
    ]
    return enc.data_notification(invoke_id, clock, enc.structure(values))


@functools.lru_cache(maxsize=64)
def _definitions(fields: tuple[Field, ...]) -> bytes:
    return enc.array([_capture_definition(f) for f in fields])


def encode_frames(spec: ModelSpec, apdu: bytes) -> list[bytes]:
    """The link-layer frames the model sends an APDU (plain or ciphered) in."""
    if spec.link == "gbt":
        return enc.hdlc_gbt_frames(
            apdu,
            destination=spec.destination,
            source=spec.source,
            block_sizes=spec.block_sizes,
            control=spec.control,
        )
    if spec.link == "segmented":
        return link_build.hdlc_segments(
            apdu,
            destination=spec.destination,
            source=spec.source,
            max_info=spec.segment_info,
            control=spec.control,
            segment_control=spec.segment_control,
        )
    return [
        link_build.hdlc_frame(
            link_build.LLC_HEADER + apdu, destination=spec.destination, source=spec.source, control=spec.control
        )
    ]
