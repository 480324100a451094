"""``meterpipe tap``: watch the readings socket, like mosquitto_sub for MQTT.

    meterpipe tap [--topic PREFIX] [--json] [--config FILE | --endpoint URL]
                  [--count N] [--seconds S]

With no options it finds the running pipeline's readings socket: the config
file's endpoint when one is found ($METERPIPE_CONFIG or ./meterpipe.toml), else
the default endpoint in the runtime directory, else (when only ``meterpipe
demo`` runs) the demo's. By default it prints a readable table per push and per
status message (``--topic status/``); ``--json`` prints one JSON object per
message (the shape of ``readings_json``). ZeroMQ PUB/SUB: a tap sees only what
is published after it connected; status comes every 10 s and on each new error.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from meterpipe.common.config import CONFIG_ENV
from meterpipe.common.endpoints import READINGS_NAME, default_endpoints, demo_runtime_dir, runtime_dir
from meterpipe.common.errors import ConfigError
from meterpipe.common.instances import holder_pid
from meterpipe.common.process import StopFlag, base_parser, config_error_exit
from meterpipe.common.schema import ReadingsMessage, Status, reading_topic, readings_json, status_topic
from meterpipe.publishers.subscriber import Handler, run_subscriber


def find_endpoint(endpoint: str | None, config: str | None) -> str:
    """--endpoint > --config > $METERPIPE_CONFIG > ./meterpipe.toml > the default."""
    if endpoint:
        return endpoint
    path = config or os.environ.get(CONFIG_ENV) or ("meterpipe.toml" if Path("meterpipe.toml").exists() else None)
    if path:
        from meterpipe.common.config import load_config

        return load_config(path).endpoints.readings
    readings = default_endpoints(create=False).readings
    if holder_pid(runtime_dir(create=False)) is None and holder_pid(demo_runtime_dir()) is not None:
        return f"ipc://{demo_runtime_dir() / READINGS_NAME}"  # only a demo runs: watch that
    return readings


def format_table(msg: ReadingsMessage) -> str:
    p = msg.push
    received = datetime.fromtimestamp(msg.received_ns / 1e9, UTC).strftime("%H:%M:%S")
    security = "authenticated" if p.authenticated else "encrypted" if p.encrypted else "plain"
    head = f"{msg.meter}  #{msg.seq}  id {p.meter_id or '-'}  meter time {p.time or '-'}  received {received}Z  {security}"
    width = max((len(r.name) for r in p.readings), default=0)
    lines = [head]
    for r in p.readings:
        lines.append(f"  {r.name:<{width}}  {r.text():>18} {r.unit or ''}".rstrip() + f"   {r.obis}")
    return "\n".join(lines)


# Counter names as a person reads them, in the order the pipeline meets them.
_COUNTER_LABELS = (
    ("bytes", "bytes"), ("frames_ok", "frames ok"), ("pushes_out", "pushes out"),
    ("checksum_errors", "checksum"), ("truncated_errors", "truncated"), ("sequence_errors", "sequence"),
    ("decrypt_errors", "decrypt"), ("auth_errors", "auth"), ("replay_errors", "replay"),
    ("unsupported", "unsupported"), ("reader_dropped", "dropped by reader"), ("frame_gaps", "frames lost"),
)


def format_status(status: Status) -> str:
    """A status message as a few readable lines: counters, the last push, the last error."""
    sent = datetime.fromtimestamp(status.sent_ns / 1e9, UTC).strftime("%H:%M:%S")
    if status.last_push_ns is None:
        last = "no push decoded yet"
    else:
        last = f"last push {max(0, status.sent_ns - status.last_push_ns) / 1e9:.0f} s ago"
    counters = dict(status.counters)
    flow = [f"{label} {counters.pop(name)}" for name, label in _COUNTER_LABELS[:3] if name in counters]
    errors = [f"{label} {value}" for name, label in _COUNTER_LABELS[3:] if (value := counters.pop(name, 0))]
    errors += [f"{name} {value}" for name, value in sorted(counters.items()) if value]  # newer decoders may add some
    lines = [f"{status.meter}  status at {sent}Z  {last}", "  " + "  ".join(flow)]
    lines.append("  errors: " + ("  ".join(errors) if errors else "none"))
    error = f"{status.last_error_kind or 'error'}: {status.last_error}" if status.last_error else "none"
    lines.append(f"  last error: {error}")
    return "\n".join(lines)


class TapHandler(Handler):
    def __init__(self, prefix: bytes, as_json: bool, out: TextIO, count: int | None, stop: StopFlag) -> None:
        self._prefix = prefix
        self._json = as_json
        self._out = out
        self._left = count
        self._stop = stop

    def on_readings(self, msg: ReadingsMessage) -> None:
        if not reading_topic(msg.meter).startswith(self._prefix):
            return
        if self._json:
            self._out.write(json.dumps(readings_json(msg), ensure_ascii=False) + "\n")
        else:
            self._out.write(format_table(msg) + "\n\n")
        self._printed()

    def on_status(self, status: Status) -> None:
        if not status_topic(status.meter).startswith(self._prefix):
            return
        if self._json:
            record = {"status": status.meter, "counters": dict(status.counters), "last_error": status.last_error,
                      "last_error_kind": status.last_error_kind}
            self._out.write(json.dumps(record) + "\n")
        else:
            self._out.write(format_status(status) + "\n\n")
        self._printed()

    def _printed(self) -> None:
        """One message printed: flush, and stop after ``--count`` of them."""
        self._out.flush()
        if self._left is not None:
            self._left -= 1
            if self._left <= 0:
                self._stop.set()



def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser("meterpipe tap", "Print readings and status messages as the decoder publishes them.",
                         verbose=False)
    parser.add_argument("--topic", default="reading/", help="topic prefix: reading/, reading/house, status/ or '' for all")
    parser.add_argument("--json", action="store_true", help="one JSON object per message")
    parser.add_argument("--endpoint", help="readings endpoint, e.g. ipc:///run/meterpipe/readings")
    parser.add_argument("--count", type=int, help="exit after N messages (pushes or status, as --topic selects)")
    parser.add_argument("--seconds", type=float, help="exit after S seconds")
    args = parser.parse_args(argv)
    try:
        endpoint = find_endpoint(args.endpoint, args.config)
    except ConfigError as exc:
        return config_error_exit(exc)
    stop = StopFlag().install()
    if args.seconds:
        import signal

        signal.signal(signal.SIGALRM, stop.set)
        signal.setitimer(signal.ITIMER_REAL, args.seconds)
    handler = TapHandler(args.topic.encode(), args.json, sys.stdout, args.count, stop)
    try:
        run_subscriber(endpoint, handler, stop)
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
