"""The decoder's memory of recent readings, for publishers that restart.

ZeroMQ PUB keeps nothing: a publisher that was down (killed, restarted by
supervisord) would miss the pushes published meanwhile. The decoder therefore
keeps the most recent encoded reading messages, bounded by count and bytes,
and answers, on a REP socket beside the readings socket, "everything for meter
M received after T" for the meters a publisher names (its cursor: the receive
time of the last push it has stored). A publisher that names no meter gets
nothing: history is only for those who already hold the pushes before it.
Sans-IO.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

DEFAULT_CAPACITY = 20_000
DEFAULT_MAX_BYTES = 2 * 1024 * 1024  # one meter every 5 s: 5 h; 50 meters every second: 80 s


class ReplayBuffer:
    def __init__(self, capacity: int = DEFAULT_CAPACITY, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._items: deque[tuple[str, int, bytes]] = deque()
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size(self) -> int:
        """Bytes of the messages held."""
        return self._bytes

    def add(self, meter: str, received_ns: int, payload: bytes) -> None:
        self._items.append((meter, received_ns, payload))
        self._bytes += len(payload)
        while self._items and (len(self._items) > self._capacity or self._bytes > self._max_bytes):
            self._bytes -= len(self._items.popleft()[2])

    def since(self, cursors: Mapping[str, int]) -> list[bytes]:
        """Encoded messages of the named meters received after their cursor, oldest first."""
        return [p for meter, rx, p in self._items if meter in cursors and rx > cursors[meter]]
