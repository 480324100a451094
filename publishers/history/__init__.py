"""The history publisher: minute, quarter-hour and local-day history in one SQLite database.

Data flow::

    reading/<meter> --SUB--> main.HistoryHandler.on_readings
        -> store.HistoryWriter.add -> aggregate.MeterAggregator (memory: minutes, register deltas)
    tick, once a minute -> HistoryWriter.flush: one transaction of every closed minute
        -> tables (codec blobs): minute_block, push_chunk, quarter, day (days.py), meter (cursor, state)
    web process -> query.HistoryReader (read-only) -> EnergyRow, Peak, series, minutes

``aggregate`` and ``codec`` are sans-IO (no clock, no SQLite); ``cli`` loads the
CSV publisher's files through the same writer (``meterpipe history import DIR``).
"""
