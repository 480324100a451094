"""The history publisher: minute, quarter-hour and local-day history in one SQLite database.

Data flow::

    reading/<meter> --SUB--> main.HistoryHandler.on_readings
        -> store.HistoryWriter.add -> aggregate.MeterAggregator (memory: minutes, register deltas)
    tick, once a minute -> HistoryWriter.flush: one transaction of every closed minute
        -> rows (codec blobs): minute_block, push_chunk, quarter, meter (cursor, state); days.py: day
    the writer holds tables.take_writer_lock (<db>.lock) while it lives: one writer at a time
    web process -> query.HistoryReader (read-only) -> EnergyRow, Peak, series, minutes

``aggregate`` and ``codec`` are sans-IO (no clock, no SQLite); ``cli`` loads the
CSV publisher's files through the same writer (``meterpipe history import DIR``).
"""
