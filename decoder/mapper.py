r"""One meter's mapper: the A-XDR bytes of a notification body in, readings out.

Sans-IO. The session makes one call per push, ``PushMapper.map(body)``::

    body bytes
      |-- starts with a known push object list: values only (axdr.parse_data) --> its Plan.apply --> Mapped
      \-- otherwise: apdu.decode_body (axdr, or gurux-dlms), then
            |-- a push list: mapping.push_list_plan --> Plan kept, Plan.apply ---------------------> Mapped
            \-- OBIS-tagged or value-only: mapping.map_body ---------------------------------------> Mapped

A push list's layout has one representation, its :class:`~mapping.Plan`: built
from the first push that brings the list, kept here keyed by the list's bytes,
and applied to that push and to every later one, whose values alone are parsed
(a meter that sends 15 values spends most of its bytes describing them).
"""

from __future__ import annotations

from typing import Any

from meterpipe.common.errors import TruncatedError, UnsupportedError
from meterpipe.decoder.apdu import decode_body
from meterpipe.decoder.axdr import parse_data
from meterpipe.decoder.mapping import Mapped, Plan, map_body, push_list_plan

MAX_LAYOUTS = 4  # a meter has one push list; firmware updates may bring another


class PushMapper:
    """Per-meter mapping state: the model hint and the push lists seen, newest first."""

    def __init__(self, model: str | None = None) -> None:
        self.model = model
        self._plans: list[tuple[bytes, Plan]] = []  # (A-XDR bytes of the push object list, its plan)

    def __repr__(self) -> str:
        return f"PushMapper(model={self.model!r}, known_lists={self.known_lists})"

    @property
    def known_lists(self) -> int:
        """How many push object lists the mapper knows by their bytes."""
        return len(self._plans)

    def map(self, body: bytes) -> Mapped:
        """Readings, meter id and time of one data-notification body (raises DecodeError)."""
        if body[:1] == b"\x02" and len(body) > 2:
            members = body[1]
            for definitions, plan in self._plans:
                if members == plan.members and body.startswith(definitions, 2):
                    values = _values(body, 2 + len(definitions), members)
                    if values is not None:
                        return plan.apply(values)
                    break  # a value only gurux-dlms reads: the whole body goes that way
        value, via_gurux = decode_body(body)
        first = push_list_plan(value, self.model)
        if first is None:
            return map_body(value, model=self.model)
        if not via_gurux:
            self._learn(body, first)
        return first.apply(value)

    def _learn(self, body: bytes, plan: Plan) -> None:
        if body[:1] != b"\x02" or body[1] >= 0x80:  # the list must start at byte 2
            return
        _, end = parse_data(body, 2, 1)
        definitions = body[2:end]
        others = [known for known in self._plans if known[0] != definitions]
        self._plans = [(definitions, plan), *others[: MAX_LAYOUTS - 1]]


def _values(body: bytes, pos: int, members: int) -> list[Any] | None:
    """The members after the push object list (member 0, left None: no slot reads it),
    or None when one of them needs gurux-dlms."""
    values: list[Any] = [None]
    try:
        for _ in range(members - 1):
            value, pos = parse_data(body, pos, 1)
            values.append(value)
    except UnsupportedError:
        return None
    if pos != len(body):
        raise TruncatedError(f"{len(body) - pos} bytes after the notification body", data=body[pos:])
    return values
