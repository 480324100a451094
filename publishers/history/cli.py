"""``meterpipe history import DIR``: load the CSV publisher's files into the history database.

``DIR`` holds ``<meter>/<YYYY-MM-DD>[.<n>].csv`` files as ``meterpipe-csv``
writes them (header ``time,meter_id,<name> [<unit>],...``, times in UTC with
milliseconds, exact decimal values). The rows of one day's files are merged by
time (meters that alternate between push lists write one file per list) and
go through the same :class:`~meterpipe.publishers.history.store.HistoryWriter`
as live pushes, so the minutes, quarters and days are the same as if they had
been received live. Rows at or before the history's cursor for the meter are
skipped, so running it twice loads nothing twice; rows older than the meter's
first stored push (CSV files from before the history process first ran) are
counted and the way to load them is printed (:data:`OLDER_HELP`). A file that
cannot be read is reported and skipped; a torn last line (a power cut) is
ignored. It is a writer of the database: beside a running history process it
stops with exit code 2 (the writer's lock).
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TextIO

from meterpipe.common.errors import ConfigError, SchemaError
from meterpipe.common.process import EXIT_CONFIG, EXIT_OK, base_parser, config_error_exit, load_config_or_exit
from meterpipe.common.schema import check_meter_name
from meterpipe.common.values import split_decimal
from meterpipe.publishers.history.aggregate import Value
from meterpipe.publishers.history.store import HistoryWriter
from meterpipe.publishers.history.tables import DatabaseInUseError

EXIT_NO_DIR = 1
FLUSH_ROWS = 3600  # rows per transaction (the writer keeps at most ~3 h of pushes waiting)
_DAY_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:\.(\d+))?\.csv$")
_COLUMN = re.compile(r"^(?P<name>[^\[\]]+?)(?: \[(?P<unit>[^\[\]]+)\])?$")
OLDER_HELP = ("Rows older than a meter's history are not added to it (its energy would not join up). To load "
              "them: stop the pipeline (meterpipe stop), move {path} away, run this import again, then start "
              "the pipeline (meterpipe run). The new history holds what the CSV files hold: if the CSV "
              "publisher ran all along, that is everything the old one had.")


class CsvFileError(Exception):
    """A CSV file that is not one of the CSV publisher's (reported, then skipped)."""


@dataclass(slots=True)
class Row:
    received_ns: int
    meter_id: str | None
    values: list[Value]


@dataclass(slots=True)
class MeterReport:
    loaded: int = 0
    skipped: int = 0  # at or before the cursor: already in the history
    older: int = 0  # before the meter's first stored push: not loaded (OLDER_HELP)
    bad_rows: int = 0
    files: int = 0
    history_from: int | None = None  # receive ns of the meter's first stored push, when rows were older


def parse_time(text: str) -> int:
    """``2024-05-01T12:00:00.123Z`` -> receive time in ns."""
    t = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


def read_csv_file(path: Path) -> tuple[list[Row], int]:
    """The rows of one file and the number of bad rows; CsvFileError when it is no such file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CsvFileError(f"cannot read it: {exc.strerror or exc}") from exc
    if raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]  # a torn last line: the writer was cut off mid-row
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CsvFileError("not UTF-8 text") from exc
    lines = csv.reader(io.StringIO(text, newline=""))
    header = next(lines, None)
    if header is None or header[:2] != ["time", "meter_id"]:
        raise CsvFileError("no 'time,meter_id,...' header: not a file of the CSV publisher")
    columns: list[tuple[str, str | None]] = []
    for col in header[2:]:
        m = _COLUMN.match(col)
        if m is None:
            raise CsvFileError(f"column {col!r} is not '<name> [<unit>]'")
        columns.append((m.group("name"), m.group("unit")))
    rows: list[Row] = []
    bad = 0
    for fields in lines:
        if len(fields) != len(header):
            bad += 1
            continue
        try:
            t = parse_time(fields[0])
        except ValueError:
            bad += 1
            continue
        values = []
        for (name, unit), cell in zip(columns, fields[2:], strict=True):
            number = _number(cell)
            if number is not None:
                values.append(Value(name, unit, number[0], number[1]))
        rows.append(Row(t, fields[1] or None, values))
    return rows, bad


def _number(cell: str) -> tuple[int, int] | None:
    """Exact (mantissa, exponent) of a decimal cell; None for text (meter ids) and blanks."""
    if not cell or not (cell[0].isdigit() or cell[0] in "-+."):
        return None
    try:
        dec = Decimal(cell)
    except InvalidOperation:
        return None
    if not dec.is_finite():
        return None
    return split_decimal(dec)


def import_directory(writer: HistoryWriter, directory: Path, err: TextIO | None = None) -> dict[str, MeterReport]:
    """Load every meter folder of ``directory``; the report per meter. Bad files go to ``err``."""
    out = err if err is not None else sys.stderr
    reports: dict[str, MeterReport] = {}
    for folder in sorted(p for p in directory.iterdir() if p.is_dir()):
        try:
            meter = check_meter_name(folder.name)
        except SchemaError:
            print(f"skipped {folder}: not a meter name", file=out)
            continue
        report = reports[meter] = MeterReport()
        days: dict[str, list[Path]] = {}
        for f in sorted(folder.iterdir()):
            m = _DAY_FILE.match(f.name)
            if m is not None:
                days.setdefault(m.group(1), []).append(f)
        for day in sorted(days):
            rows: list[Row] = []
            for f in days[day]:
                try:
                    got, bad = read_csv_file(f)
                except CsvFileError as exc:
                    print(f"skipped {f}: {exc}", file=out)
                    continue
                report.files += 1
                report.bad_rows += bad
                if bad:
                    print(f"{f}: {bad} row(s) that are not rows of the CSV publisher skipped", file=out)
                rows.extend(got)
            rows.sort(key=lambda r: r.received_ns)
            for i, r in enumerate(rows):
                first = writer.first_stored(meter)
                if writer.add_values(meter, r.received_ns, r.values, r.meter_id):
                    report.loaded += 1
                elif first is not None and r.received_ns < first:
                    report.older += 1
                    report.history_from = first
                else:
                    report.skipped += 1
                if i % FLUSH_ROWS == FLUSH_ROWS - 1 and not writer.flush():
                    print(f"error: cannot write {writer.path}; stopping", file=out)
                    return reports
            if not writer.flush():
                print(f"error: cannot write {writer.path}; stopping", file=out)
                return reports
    return reports


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser("meterpipe history", "The history database of meterpipe.", verbose=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    imp = sub.add_parser("import", help="load the CSV publisher's files (DIR/<meter>/<day>.csv)")
    imp.add_argument("directory", metavar="DIR", type=Path, help="the CSV publisher's directory")
    imp.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                     help="config file (default: $METERPIPE_CONFIG, else ./meterpipe.toml)")
    args = parser.parse_args(argv)
    config = load_config_or_exit(args.config)
    if not args.directory.is_dir():
        print(f"error: {args.directory} is not a directory", file=sys.stderr)
        return EXIT_NO_DIR
    cfg = config.publishers.history
    try:
        writer = HistoryWriter.from_config(config)
    except DatabaseInUseError as exc:
        print(f"error: {exc.reason}", file=sys.stderr)
        return EXIT_CONFIG
    except ConfigError as exc:
        return config_error_exit(exc)
    try:
        reports = import_directory(writer, args.directory)
    finally:
        writer.close()
    if not reports:
        print(f"no meter folders under {args.directory}")
    for meter, r in reports.items():
        older = ""
        if r.older and r.history_from is not None:
            since = datetime.fromtimestamp(r.history_from / 1e9, config.web.zone).isoformat(timespec="seconds")
            older = f", {r.older} older than the history (it starts at {since}): not loaded"
        print(f"{meter}: {r.loaded} row(s) loaded from {r.files} file(s), {r.skipped} already in the history"
              + older + (f", {r.bad_rows} bad row(s) skipped" if r.bad_rows else ""))
    if any(r.older for r in reports.values()):
        print(OLDER_HELP.format(path=cfg.path))
    print(f"history: {cfg.path}")
    return EXIT_OK
