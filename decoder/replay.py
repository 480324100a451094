"""The decoder's memory of recent readings, for publishers that restart.

ZeroMQ PUB keeps nothing: a publisher that was down (killed, restarted by
supervisord) would miss the pushes published meanwhile. The decoder therefore
keeps the last ``capacity`` encoded reading messages and answers, on a REP
socket beside the readings socket, "everything for meter M received after T"
for the meters a publisher names (its cursor: the receive time of the last
push it has stored). A publisher that names no meter gets nothing: history is
only for those who already hold the pushes before it. Sans-IO.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

DEFAULT_CAPACITY = 20_000  # at 1 push/s per meter: 5.5 h for one meter, 20 s for a thousand


class ReplayBuffer:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._items: deque[tuple[str, int, bytes]] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, meter: str, received_ns: int, payload: bytes) -> None:
        self._items.append((meter, received_ns, payload))

    def since(self, cursors: Mapping[str, int]) -> list[bytes]:
        """Encoded messages of the named meters received after their cursor, oldest first."""
        return [p for meter, rx, p in self._items if meter in cursors and rx > cursors[meter]]
