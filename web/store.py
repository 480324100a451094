"""The history database, read on one thread of its own.

:class:`HistoryStore` owns a single worker thread that opens the history helper's
read-only :class:`~meterpipe.publishers.history.query.HistoryReader` on first use (so
``sqlite3`` loads only when a page needs history) and runs every query there: the
reader is safe for one thread, and a Pi has few cores to share anyway. Queries are
awaited from the event loop with :meth:`HistoryStore.run`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from zoneinfo import ZoneInfo

from meterpipe.web.params import ParamError

if TYPE_CHECKING:
    from meterpipe.publishers.history.query import HistoryReader

T = TypeVar("T")
log = logging.getLogger(__name__)


class HistoryUnavailable(ParamError):
    """The history database could not answer: 503, and the page says where to look."""

    def __init__(self, what: str) -> None:
        super().__init__("history", f"the history database cannot answer right now ({what}); the history "
                         "process's log (meterpipe run output, or the Status page) says more", 503)


class HistoryStore:
    def __init__(self, path: Path, zone: ZoneInfo) -> None:
        self.path = path
        self.zone = zone
        self._reader: HistoryReader | None = None
        self._pool: ThreadPoolExecutor | None = None

    def _get(self) -> HistoryReader:
        if self._reader is None:
            from meterpipe.publishers.history.query import HistoryReader

            self._reader = HistoryReader(self.path, self.zone)
        return self._reader

    async def run(self, query: Callable[[HistoryReader], T]) -> T:
        """``query(reader)`` on the history thread; :class:`HistoryUnavailable` (503) when the
        database cannot answer (a disk error, a damaged row, locked for too long)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history")
        return await asyncio.get_running_loop().run_in_executor(self._pool, lambda: self._answer(query))

    def _answer(self, query: Callable[[HistoryReader], T]) -> T:
        import sqlite3

        from meterpipe.publishers.history.codec import BlobError

        try:
            return query(self._get())
        except (sqlite3.Error, BlobError) as exc:
            log.warning("the history database %s could not answer: %s", self.path, exc)
            raise HistoryUnavailable(type(exc).__name__) from exc

    def close(self) -> None:
        if self._pool is not None:
            def close_reader() -> None:
                if self._reader is not None:
                    self._reader.close()
                    self._reader = None

            self._pool.submit(close_reader).result(timeout=5)
            self._pool.shutdown(wait=True)
            self._pool = None
