"""Install and drive the reference collector for benchmarks/decode.py.

The reference is smartmeter-datacollector 2.0.0 (GPL-2.0, with gurux-dlms
1.0.203). None of its code is copied here: it is installed from PyPI into its
own venv (``benchmarks/.venv-reference``, or ``$METERPIPE_REFERENCE_VENV``) and
called from a driver script that runs in a subprocess of that venv.

The driver builds ``HdlcDlmsParser(Cosem(fallback_id=...), key)`` and drives it
per HDLC frame exactly as ``SerialHdlcDlmsMeter._data_received`` does:
``append_to_hdlc_buffer`` -> ``extract_data_from_hdlc_frames`` ->
``extract_message_time`` -> ``parse_to_dlms_objects`` ->
``convert_dlms_bundle_to_reader_data``. A push counts only when its bundle
holds data points. Gurux prints on every decrypt; the driver sends that to
/dev/null (its cost stays in the timing) and answers on a duplicate of the
original stdout.

Protocol: one JSON object per line on the driver's stdin, one JSON reply per
line. Keys travel on stdin, never on the command line.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

REFERENCE_PACKAGE = "smartmeter-datacollector"
REFERENCE_VERSION = "2.0.0"
GURUX_VERSION = "1.0.203"
DEFAULT_VENV = Path(__file__).resolve().parent / ".venv-reference"

# Cosem overrides per meter model, as the reference's meter classes set them
# (lge570.py: currents unscaled; lge360.py / iskraam550.py: voltages x0.1).
# The driver below builds them with the reference's own classes.
PROFILES = ("default", "lge570", "lge360", "iskraam550")

DRIVER = r'''
import json, logging, os, sys, time

out = os.fdopen(os.dup(1), "w", buffering=1)
devnull = os.open(os.devnull, os.O_WRONLY)
os.dup2(devnull, 1)  # gurux print()s on every decrypt: discard it
sys.stdout = open(os.devnull, "w")
logging.basicConfig(level=logging.ERROR, stream=sys.stderr)  # decode checked by the harness

from importlib.metadata import version
from smartmeter_datacollector.smartmeter.cosem import Cosem, RegisterCosem
from smartmeter_datacollector.smartmeter.hdlc_dlms_parser import HdlcDlmsParser
from smartmeter_datacollector.smartmeter.meter_data import MeterDataPointTypes as T
from smartmeter_datacollector.smartmeter.obis import OBISCode


def overrides(profile):
    if profile == "lge570":
        return [RegisterCosem(OBISCode(1, 0, 31, 7, 0), T.CURRENT_L1.value, 1.0),
                RegisterCosem(OBISCode(1, 0, 51, 7, 0), T.CURRENT_L2.value, 1.0),
                RegisterCosem(OBISCode(1, 0, 71, 7, 0), T.CURRENT_L3.value, 1.0)]
    if profile in ("lge360", "iskraam550"):
        return [RegisterCosem(OBISCode(1, 0, 32, 7, 0), T.VOLTAGE_L1.value, 0.1),
                RegisterCosem(OBISCode(1, 0, 52, 7, 0), T.VOLTAGE_L2.value, 0.1),
                RegisterCosem(OBISCode(1, 0, 72, 7, 0), T.VOLTAGE_L3.value, 0.1)]
    return None


class Capture:
    def __init__(self, spec):
        self.frames = [bytes.fromhex(f) for f in spec["frames"]]
        cosem = Cosem(fallback_id="bench", register_obis_extended=overrides(spec["profile"]))
        self.parser = HdlcDlmsParser(cosem, spec["key"])

    def feed(self):
        """One pass over the capture, per frame as SerialHdlcDlmsMeter._data_received."""
        parser = self.parser
        bundles = []
        for frame in self.frames:
            parser.append_to_hdlc_buffer(frame)
            if parser.extract_data_from_hdlc_frames():
                message_time = parser.extract_message_time()
                dlms_objects = parser.parse_to_dlms_objects()
                if not dlms_objects:
                    continue
                bundle = parser.convert_dlms_bundle_to_reader_data(dlms_objects, message_time)
                if bundle.data_points:
                    bundles.append(bundle)
        return bundles


def run(cap, seconds):
    pushes = 0
    feeds = 0
    start = time.perf_counter()
    deadline = start + seconds
    cpu0 = time.process_time()
    while True:
        pushes += len(cap.feed())
        feeds += 1
        now = time.perf_counter()
        if now >= deadline:
            break
    return {"pushes": pushes, "feeds": feeds, "elapsed": now - start,
            "cpu": time.process_time() - cpu0}


captures = {}
for line in sys.stdin:
    msg = json.loads(line)
    cmd = msg["cmd"]
    try:
        if cmd == "hello":
            if msg.get("cpu") is not None:
                os.sched_setaffinity(0, {msg["cpu"]})
            reply = {"ok": True, "versions": {
                "smartmeter-datacollector": version("smartmeter-datacollector"),
                "gurux-dlms": version("gurux-dlms")},
                "python": sys.version.split()[0], "affinity": sorted(os.sched_getaffinity(0))}
        elif cmd == "load":
            cap = Capture(msg)
            first = cap.feed()
            second = cap.feed()
            captures[msg["id"]] = cap
            reply = {"ok": True, "pushes_per_feed": [len(first), len(second)],
                     "data_points": [len(b.data_points) for b in first],
                     "source": [b.source for b in first]}
        elif cmd == "run":
            reply = {"ok": True, **run(captures[msg["id"]], msg["seconds"])}
        else:
            reply = {"ok": False, "error": "unknown command " + cmd}
    except Exception as exc:  # report to the harness, which decides
        reply = {"ok": False, "error": type(exc).__name__ + ": " + str(exc)}
    out.write(json.dumps(reply) + "\n")
'''


class ReferenceSetupError(RuntimeError):
    """The reference could not be installed or did not answer as expected."""


def venv_path() -> Path:
    env = os.environ.get("METERPIPE_REFERENCE_VENV")
    return Path(env) if env else DEFAULT_VENV


def venv_python(path: Path) -> Path:
    return path / "bin" / "python"


def _installed(python: Path) -> bool:
    if not python.exists():
        return False
    probe = (
        "from importlib.metadata import version as v;"
        f"import sys; sys.exit(0 if v('{REFERENCE_PACKAGE}') == '{REFERENCE_VERSION}'"
        f" and v('gurux-dlms') == '{GURUX_VERSION}' else 1)"
    )
    return subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0


def ensure_reference(path: Path | None = None) -> Path:
    """Return the venv's python, creating the venv and installing the reference if missing."""
    path = path or venv_path()
    python = venv_python(path)
    if _installed(python):
        return python
    log.info("installing %s==%s into %s", REFERENCE_PACKAGE, REFERENCE_VERSION, path)
    if not python.exists():
        venv.EnvBuilder(with_pip=True, clear=False).create(path)
    cmd = [
        str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet",
        f"{REFERENCE_PACKAGE}=={REFERENCE_VERSION}", f"gurux-dlms=={GURUX_VERSION}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not _installed(python):
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise ReferenceSetupError(f"could not install the reference into {path}:\n{tail}")
    return python


@dataclass(frozen=True, slots=True)
class RefLoad:
    pushes_per_feed: int
    data_points: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RefRun:
    pushes: int
    feeds: int
    elapsed: float
    cpu: float

    @property
    def pushes_per_s(self) -> float:
        return self.pushes / self.elapsed


class ReferenceDriver:
    """A running driver subprocess; use as a context manager."""

    def __init__(self, python: Path, cpu: int | None) -> None:
        self._proc = subprocess.Popen(
            [str(python), "-c", DRIVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        hello = self._ask({"cmd": "hello", "cpu": cpu})
        self.versions: dict[str, str] = hello["versions"]
        self.affinity: list[int] = hello["affinity"]

    def __enter__(self) -> ReferenceDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        stdin: IO[str] | None = self._proc.stdin
        if stdin is not None and not stdin.closed:
            stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def _ask(self, msg: dict[str, Any]) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(msg) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise ReferenceSetupError(f"reference driver exited (code {self._proc.poll()})")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise ReferenceSetupError(f"reference driver: {reply.get('error')}")
        return reply

    def load(self, cap_id: str, frames: list[bytes], key: bytes | None, profile: str) -> RefLoad:
        """Hand a capture to the reference and check that it really decodes.

        The capture is fed twice; both passes must give the same non-zero number
        of pushes, each with data points.
        """
        if profile not in PROFILES:
            raise ValueError(f"unknown reference profile {profile!r}")
        reply = self._ask({
            "cmd": "load", "id": cap_id, "frames": [f.hex() for f in frames],
            "key": key.hex().upper() if key else None, "profile": profile,
        })
        first, second = reply["pushes_per_feed"]
        if first == 0 or first != second:
            raise ReferenceSetupError(
                f"{cap_id}: reference decoded {first} then {second} pushes with data points"
            )
        return RefLoad(first, tuple(reply["data_points"]))

    def run(self, cap_id: str, seconds: float) -> RefRun:
        reply = self._ask({"cmd": "run", "id": cap_id, "seconds": seconds})
        return RefRun(reply["pushes"], reply["feeds"], reply["elapsed"], reply["cpu"])


def main(argv: list[str] | None = None) -> int:
    """Install the reference if missing and print its versions."""
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    del argv
    try:
        python = ensure_reference()
        with ReferenceDriver(python, None) as driver:
            print(f"reference venv {venv_path()}: {driver.versions}")
    except ReferenceSetupError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
