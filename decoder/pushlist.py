"""A fast path for push-list layouts (IDIS, Landis+Gyr, Iskraemeco), sans-IO.

Such a push repeats its push object list, byte for byte, in every push: a
meter that sends 15 values spends most of its bytes (and most of a parser's
time) describing them. A :class:`PushListCache` (one per meter) remembers the
lists it has seen, as bytes, with the :class:`~mapping.Plan` map_body applies
to such a body; a push that starts with a known list is decoded by parsing
only its values and applying the same plan.
"""

from __future__ import annotations

from typing import Any

from meterpipe.common.errors import TruncatedError
from meterpipe.decoder.axdr import parse_data
from meterpipe.decoder.mapping import Mapped, Plan, push_list_plan

MAX_LAYOUTS = 4  # a meter has one push list; firmware updates may bring another


class PushListCache:
    def __init__(self) -> None:
        self._plans: list[tuple[bytes, Plan]] = []  # (A-XDR bytes of the push object list, its plan)

    def __len__(self) -> int:
        return len(self._plans)

    def decode(self, apdu: bytes, pos: int) -> Mapped | None:
        """Map the body at ``apdu[pos:]`` if it starts with a known push object list."""
        if apdu[pos : pos + 1] != b"\x02" or pos + 2 >= len(apdu):
            return None
        for definitions, plan in self._plans:
            if apdu[pos + 1] == plan.members and apdu.startswith(definitions, pos + 2):
                p = pos + 2 + len(definitions)
                values: list[Any] = [None]  # member 0, the list itself: no slot reads it
                for _ in range(plan.members - 1):
                    value, p = parse_data(apdu, p, 1)
                    values.append(value)
                if p != len(apdu):
                    raise TruncatedError(f"{len(apdu) - p} bytes after the notification body", data=apdu[p:])
                return plan.apply(values)
        return None

    def learn(self, apdu: bytes, pos: int, body: Any, model: str | None) -> None:
        """Remember the push object list of a body map_body read as a push-list layout."""
        if not (apdu[pos : pos + 1] == b"\x02" and apdu[pos + 1] < 0x80):
            return
        plan = push_list_plan(body, model)
        if plan is None:
            return
        _, end = parse_data(apdu, pos + 2, 1)
        self._plans = [(apdu[pos + 2 : end], plan), *self._plans[: MAX_LAYOUTS - 1]]
