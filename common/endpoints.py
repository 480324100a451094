"""Where the meterpipe sockets live: the one module holding endpoint defaults.

Two sockets join the processes:

* ``frames``   readers PUSH-connect, the decoder PULL-binds;
* ``readings`` the decoder PUB-binds, publishers and taps SUB-connect.

By default both are ``ipc://`` sockets in a private runtime directory (mode
0700), chosen by :func:`runtime_dir`:

1. ``$METERPIPE_RUNTIME_DIR`` when set;
2. ``$XDG_RUNTIME_DIR/meterpipe`` when ``XDG_RUNTIME_DIR`` is set;
3. ``/run/meterpipe`` when running as root;
4. ``/tmp/meterpipe-<uid>`` otherwise.

A config file may name other endpoints (``tcp://`` for readers on other hosts);
:func:`check_endpoint` validates their syntax. ZeroMQ cannot bind an ``ipc://``
path longer than 107 bytes (the size of ``sun_path`` less its terminator).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from meterpipe.common.errors import ConfigError

IPC_PATH_MAX = 107  # zmq.IPC_PATH_MAX_LEN on Linux
SCHEMES = ("ipc", "tcp", "inproc")
FRAMES_NAME = "frames"
DEMO_NAME = "demo"  # `meterpipe demo` runs in <runtime dir>/demo, never sharing sockets with `meterpipe run`
READINGS_NAME = "readings"

_TCP = re.compile(r"^(?:[^;]+;)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]/\s]+):(?P<port>\d+|\*)$")
_HOST = re.compile(r"^(?:\*|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])$")


@dataclass(frozen=True, slots=True)
class EndpointsConfig:
    frames: str  # readers PUSH connect, decoder PULL binds
    readings: str  # decoder PUB binds, publishers and taps SUB connect
    # CurveZMQ for readers on other hosts (tcp frames endpoint); paths to key files
    # (meterpipe.common.curve). Decoder side: its key pair and the readers it accepts.
    curve_server_secret: Path | None = None
    curve_authorized_dir: Path | None = None
    # Reader side (a reader on another host): the decoder's public key and this reader's pair.
    curve_server_public: Path | None = None
    curve_client_secret: Path | None = None


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def runtime_dir(create: bool = True, *, environ: Mapping[str, str] | None = None) -> Path:
    """The private directory for ``ipc://`` sockets (see the module docstring).

    With ``create`` the directory is made (parents too) with mode 0700; an existing
    one we own with a looser mode is tightened to 0700. One owned by another user
    is refused (unless we are root), since it could let that user intercept frames.
    """
    env = _env(environ)
    if env.get("METERPIPE_RUNTIME_DIR"):
        path = Path(env["METERPIPE_RUNTIME_DIR"]).expanduser()
    elif env.get("XDG_RUNTIME_DIR"):
        path = Path(env["XDG_RUNTIME_DIR"]) / "meterpipe"
    elif os.geteuid() == 0:
        path = Path("/run/meterpipe")
    else:
        path = Path(f"/tmp/meterpipe-{os.geteuid()}")
    if create:
        make_private_dir(path)
    return path


def demo_runtime_dir(*, environ: Mapping[str, str] | None = None) -> Path:
    """The runtime directory of ``meterpipe demo``: its own sockets, control socket and lock."""
    return runtime_dir(create=False, environ=environ) / DEMO_NAME


def make_private_dir(path: Path) -> None:
    """Create ``path`` with mode 0700, or tighten it to 0700 if it exists and is ours."""
    field = "endpoints"
    hint = "set $METERPIPE_RUNTIME_DIR to a folder you own"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
    except OSError as exc:
        raise ConfigError(
            field, f"cannot create runtime directory {path}: {exc.strerror}; {hint}"
        ) from exc
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(field, f"runtime directory {path} is not a directory; {hint}")
    uid = os.geteuid()
    if info.st_uid != uid:
        if uid == 0:
            return
        raise ConfigError(
            field, f"runtime directory {path} belongs to another user (uid {info.st_uid}); {hint}"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        try:
            path.chmod(0o700)
        except OSError as exc:
            raise ConfigError(
                field, f"cannot make runtime directory {path} private (chmod 700): {exc.strerror}"
            ) from exc


def default_endpoints(
    create: bool = True, *, environ: Mapping[str, str] | None = None
) -> EndpointsConfig:
    """``ipc://<runtime_dir>/frames`` and ``ipc://<runtime_dir>/readings``."""
    base = runtime_dir(create, environ=environ)
    frames = check_endpoint(f"ipc://{base / FRAMES_NAME}", "endpoints.frames")
    readings = check_endpoint(f"ipc://{base / READINGS_NAME}", "endpoints.readings")
    return EndpointsConfig(frames=frames, readings=readings)


def ipc_path(endpoint: str) -> Path | None:
    """The filesystem path of an ``ipc://`` endpoint; None for other schemes and
    for Linux abstract-namespace names (``ipc://@name``)."""
    if not endpoint.startswith("ipc://"):
        return None
    rest = endpoint[len("ipc://"):]
    if not rest or rest.startswith("@"):
        return None
    return Path(rest)


def ensure_ipc_dir(endpoint: str) -> None:
    """Before binding: create the folder of an ``ipc://`` endpoint (mode 0700) if missing.

    Does nothing for other schemes or when the folder exists already.
    """
    path = ipc_path(endpoint)
    if path is not None and not path.parent.exists():
        make_private_dir(path.parent)


def check_endpoint(endpoint: object, field: str) -> str:
    """Validate the syntax of a ZeroMQ endpoint; returns it unchanged or raises ConfigError."""
    if not isinstance(endpoint, str):
        raise ConfigError(field, "expected a quoted endpoint such as \"ipc:///run/meterpipe/frames\"")
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ConfigError(
            field,
            f"endpoint {endpoint!r} must start with ipc://, tcp:// or inproc:// "
            "(for example ipc:///run/meterpipe/frames or tcp://127.0.0.1:5555)",
        )
    if not rest:
        raise ConfigError(field, f"endpoint {endpoint!r} has nothing after {scheme}://")
    if scheme == "ipc":
        size = len(os.fsencode(rest))
        if size > IPC_PATH_MAX:
            raise ConfigError(
                field,
                f"ipc path is {size} bytes long, ZeroMQ allows at most {IPC_PATH_MAX}; "
                "use a shorter folder (set $METERPIPE_RUNTIME_DIR or the endpoint)",
            )
    elif scheme == "tcp":
        match = _TCP.match(rest)
        if match is None or not _HOST.match(match["host"]):
            raise ConfigError(
                field, f"endpoint {endpoint!r} is not tcp://HOST:PORT (for example tcp://127.0.0.1:5555)"
            )
        port = match["port"]
        if port != "*" and not 1 <= int(port) <= 65535:
            raise ConfigError(field, f"endpoint {endpoint!r}: port must be 1-65535 (or * when binding)")
    return endpoint


def replay_endpoint(readings: str) -> str:
    """The decoder's replay socket, derived from its readings endpoint.

    Publishers that restart ask it for the pushes they missed (see
    decoder/replay.py): ``ipc://.../readings`` -> ``ipc://.../readings.replay``,
    ``tcp://host:port`` -> ``tcp://host:port+1``, ``inproc://x`` -> ``inproc://x.replay``.
    """
    scheme, _, rest = readings.partition("://")
    if scheme == "tcp":
        host, _, port = rest.rpartition(":")
        if port.isdigit():
            return f"tcp://{host}:{int(port) + 1}"
        raise ConfigError("endpoints.readings", f"cannot derive a replay endpoint from {readings!r}: give a port number")
    return f"{readings}.replay"
