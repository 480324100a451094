"""The history publisher: minute, quarter-hour, hour and day aggregates in one SQLite database."""
