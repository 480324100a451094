"""``meterpipe-csv``: write every push into per-meter, per-day CSV files."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from meterpipe.common.config import Config
from meterpipe.publishers.csv_writer import CsvHandler, CsvStore
from meterpipe.publishers.subscriber import Handler, run_publisher


def build(config: Config) -> tuple[Handler, Callable[[], None]]:
    cfg = config.publishers.csv
    store = CsvStore(cfg.directory, cfg.retention_days)
    return CsvHandler(store), store.close


def main(argv: Sequence[str] | None = None) -> int:
    return run_publisher("meterpipe-csv", "Write meter readings to CSV files.", argv, "csv", build)


if __name__ == "__main__":
    raise SystemExit(main())
