"""Reading and writing meterpipe.toml for the settings page, and the starter file.

:func:`save` validates first (with the loader every process uses: a failure raises
ConfigError and touches no file), then writes the new secret files (mode 0600, in
``keys/`` beside the config, mode 0700), keeps the previous file as
``meterpipe.toml.bak`` and replaces the file atomically (temp file, fsync, rename,
fsync of the folder), keeping the user's comments and order (tomlkit). It returns
the config loaded back from the written file, so what the page applies is what the
processes will read.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meterpipe.common.config import Config, config_from_dict, load_config
from meterpipe.common.config_edit import KEYS_DIR, Edit, merge_into, plan_edit
from meterpipe.common.errors import ConfigError
from meterpipe.common.files import write_atomic

STARTER = """\
# meterpipe's config. The settings page (http://{listen}/settings) edits this file
# and keeps your comments; `meterpipe check-config` validates it. Every setting and
# its default: see the README.

# One table per meter, e.g.:
# [[meters]]
# name = "house"
# port = "/dev/serial/by-id/usb-FTDI_FT232R-if00-port0"
# baudrate = 2400
# parity = "E"
# key_file = "keys/house.key"

[publishers.csv]
enabled = true
directory = "{data}/csv"

[publishers.history]
enabled = true
path = "{data}/history.sqlite"   # the web page's password hash goes beside it

[web]
listen = "{listen}"
"""


def write_starter(path: Path, listen: str, data: str = "data") -> None:
    """A new config with no meter yet (the settings page adds them); never overwrites.
    ``data``: where CSV files, the history and the password hash go (relative: beside it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "x", encoding="utf-8") as fh:  # "x": an existing file is never replaced
        fh.write(STARTER.format(listen=listen, data=data))
    os.chmod(path, 0o600)


def read_tables(path: Path) -> tuple[str, Any]:
    """(text, tomlkit document) of the file."""
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the config file: {exc.strerror or 'error'}") from exc
    try:
        return text, tomlkit.parse(text)
    except TOMLKitError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from exc


def plain(doc: Any) -> dict[str, Any]:
    value = doc.unwrap()
    assert isinstance(value, dict)
    return value


@dataclass(frozen=True, slots=True)
class Upload:
    """A file the form brought (the MQTT broker's CA): written beside the config under a fresh
    name, which the setting ``table.name`` then points to."""

    table: str  # "publishers.mqtt"
    name: str  # "ca_file"
    relative: str  # wanted name: "tls/mqtt-ca.pem" (a free variant is taken when it exists)
    data: bytes = field(repr=False)


def _fresh(base: Path, relative: str) -> str:
    stem, dot, ext = relative.rpartition(".")
    number = 1
    while (base / relative).exists():
        number += 1
        relative = f"{stem}-{number}{dot}{ext}"
    return relative


def _set(tables: dict[str, Any], dotted: str, name: str, value: str) -> None:
    node = tables
    for part in dotted.split("."):
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[name] = value


def save(path: Path, wanted: Mapping[str, Any], *, environ: Mapping[str, str] | None = None,
         uploads: Sequence[Upload] = (), check: Callable[[Config], None] | None = None) -> tuple[Config, Edit]:
    """Validate ``wanted`` (the shape of :func:`~meterpipe.common.config_edit.public_view`) and
    write it; returns the config read back from the file and the edit made. ``check`` may refuse
    a valid config (ConfigError) before anything is written. Nothing on disk changes when it
    raises: new secrets and uploads get file names no config refers to."""
    try:
        return _save(path, wanted, environ=os.environ if environ is None else environ, uploads=uploads,
                     check=check)
    except OSError as exc:
        raise ConfigError(str(path), f"cannot write beside the config file: {exc.strerror or exc}; the "
                          "meterpipe user needs write access to its folder") from exc


def _save(path: Path, wanted: Mapping[str, Any], *, environ: Mapping[str, str], uploads: Sequence[Upload],
          check: Callable[[Config], None] | None) -> tuple[Config, Edit]:
    import tomlkit

    base = path.parent
    text, doc = read_tables(path)
    old = plain(doc)
    tables = dict(wanted)
    placed: list[Path] = []
    try:
        for upload in uploads:  # the loader checks that such a file exists: place it first
            relative = _fresh(base, upload.relative)
            (base / relative).parent.mkdir(mode=0o700, exist_ok=True)
            write_atomic(base / relative, upload.data, 0o600)
            placed.append(base / relative)
            _set(tables, upload.table, upload.name, relative)
        edit = plan_edit(old, tables, exists=lambda relative: (base / relative).exists())
        new = config_from_dict(edit.check, source=path.absolute(), environ=environ)  # ConfigError: nothing written
        if check is not None:
            check(new)
    except BaseException:
        for placed_file in placed:
            placed_file.unlink(missing_ok=True)
        raise
    mode = stat.S_IMODE(path.stat().st_mode)
    if edit.secrets:
        (base / KEYS_DIR).mkdir(mode=0o700, exist_ok=True)
        for secret in edit.secrets:
            write_atomic(base / secret.relative, secret.data, 0o600)
    merge_into(doc, old, edit.tables)
    backup = text
    for retired in edit.retired:  # a secret that left the file does not stay in its backup
        backup = backup.replace(retired, "(removed by the settings page)")
    write_atomic(path.with_name(path.name + ".bak"), backup.encode("utf-8"), 0o600)
    write_atomic(path, tomlkit.dumps(doc).encode("utf-8"), mode)
    try:
        return load_config(path, environ=environ), edit
    except ConfigError:
        write_atomic(path, text.encode("utf-8"), mode)  # the merge went wrong: put the old file back
        raise
