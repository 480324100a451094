"""Issue 9: a reader imports only what it uses.

One reader process runs per meter, so whatever a reader imports is paid once per
meter (benchmarks/memory.py measures it). These modules belong to other
processes or are loaded only when needed, and each costs memory in every reader
that loads it. The first test imports the reader's main module; the second runs
a reader process that forwards a frame and stops, with ``-X importtime``, so an
import made while it runs (inside a function) counts too. The last one checks
that ``--help`` keeps the width argparse would give it without its shutil import.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
import zmq

from meterpipe.common.link.build import hdlc_frame
from meterpipe.common.process import add_config_argument, base_parser, terminal_columns

FRAME = hdlc_frame(b"\xe6\xe7\x00\x0f\x00\x00\x00\x01meterpipe test push", destination=b"\xff", source=b"\x03")

# module -> why a reader must not load it
NOT_IN_A_READER = {
    "meterpipe.decoder": "decoding is the decoder's job (and reader<->decoder imports are forbidden)",
    "cryptography": "AES-GCM is the decoder's",
    "gurux_dlms": "COSEM parsing is the decoder's",
    "asyncio": "pulled in by zmq.auth.thread, the decoder's CurveZMQ authenticator (common/curve.py)",
    "ssl": "comes with asyncio",
    "zmq.auth": "key files are read only when CurveZMQ is configured (common/curve_keys.py)",
    "meterpipe.common.curve": "the CurveZMQ server side; a reader needs common/curve_keys.py only",
    "meterpipe.common.link.p1": "P1 telegrams are cut only for link = \"dsmr\"",
    "hashlib": "loads OpenSSL; only key fingerprints need it (common/errors.py)",
    "decimal": "only the decoder's mapping splits non-integer values (common/schema.py)",
    "difflib": "only a config error with a misspelt setting needs it (common/config_fields.py)",
    "shutil": "argparse imports it (with zlib, bz2, lzma) for the help width (common/process.py)",
}


def unwanted(modules: Iterable[str]) -> dict[str, str]:
    """The entries of NOT_IN_A_READER that ``modules`` holds (themselves or a submodule)."""
    loaded = set(modules)
    return {banned: why for banned, why in NOT_IN_A_READER.items()
            if any(name == banned or name.startswith(banned + ".") for name in loaded)}


def test_importing_the_reader_loads_none_of_them() -> None:
    code = "import meterpipe.reader.main, sys; print('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    modules = result.stdout.split()
    assert "meterpipe.reader.service" in modules
    assert unwanted(modules) == {}


def imported(importtime: str) -> set[str]:
    """Module names from ``-X importtime`` lines (``import time: self | cumulative | name``)."""
    names = set()
    for line in importtime.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                names.add(name)
    return names


def test_a_running_reader_loads_none_of_them(tmp_path: Path) -> None:
    master, slave = os.openpty()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    pull.bind(f"ipc://{tmp_path}/frames")
    config = tmp_path / "meterpipe.toml"
    config.write_text(f'[[meters]]\nname = "house"\nport = "{os.ttyname(slave)}"\nlink = "hdlc"\n\n'
                      f'[endpoints]\nframes = "ipc://{tmp_path}/frames"\nreadings = "ipc://{tmp_path}/readings"\n')
    env = {k: v for k, v in os.environ.items() if k != "METERPIPE_CONFIG"}
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "meterpipe.reader.main", "--meter", "house", "--config", str(config)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not pull.poll(100):  # the port is open once a frame comes through
            assert proc.poll() is None and time.monotonic() < deadline, "the reader forwarded no frame"
            os.write(master, FRAME)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        pull.close()
        ctx.term()
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, stderr[-2000:]
    modules = imported(stderr)
    assert {"meterpipe.reader.service", "serial", "msgpack"} <= modules
    assert unwanted(modules) == {}


@pytest.mark.parametrize("columns", [None, "40", "132", "0", "junk"])
def test_help_keeps_the_width_argparse_gives_it(monkeypatch: pytest.MonkeyPatch, columns: str | None) -> None:
    """base_parser passes the width instead of letting argparse import shutil for it: same text."""
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    ours = base_parser("meterpipe-reader", "Read one meter's serial port and push its frames.")
    stock = argparse.ArgumentParser(prog="meterpipe-reader", description="Read one meter's serial port and push its frames.")
    add_config_argument(stock)
    stock.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    for parser in (ours, stock):
        parser.add_argument("--meter", required=True, help="name of the meter in the config ([[meters]] name)")
    assert ours.format_help() == stock.format_help()
    assert terminal_columns() == shutil.get_terminal_size().columns
