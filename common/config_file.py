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
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from meterpipe.common.config import Config, config_from_dict, load_config
from meterpipe.common.config_edit import KEYS_DIR, Edit, merge_into, plan_edit
from meterpipe.common.errors import ConfigError

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


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save(path: Path, wanted: Mapping[str, Any], *, environ: Mapping[str, str] | None = None) -> tuple[Config, Edit]:
    """Validate ``wanted`` (the shape of :func:`~meterpipe.common.config_edit.public_view`) and
    write it; returns the config read back from the file and the edit made."""
    import tomlkit

    env = os.environ if environ is None else environ
    text, doc = read_tables(path)
    old = plain(doc)
    edit = plan_edit(old, wanted)
    source = path.absolute()
    config_from_dict(edit.check, source=source, environ=env)  # raises ConfigError: nothing written
    mode = stat.S_IMODE(path.stat().st_mode)
    if edit.secrets:
        keys = path.parent / KEYS_DIR
        keys.mkdir(mode=0o700, exist_ok=True)
        for secret in edit.secrets:
            _write_atomic(path.parent / secret.relative, secret.data, 0o600)
    merge_into(doc, old, edit.tables)
    backup = path.with_name(path.name + ".bak")
    _write_atomic(backup, text.encode("utf-8"), mode)
    _write_atomic(path, tomlkit.dumps(doc).encode("utf-8"), mode)
    try:
        return load_config(path, environ=env), edit
    except ConfigError:
        _write_atomic(path, text.encode("utf-8"), mode)  # the merge went wrong: put the old file back
        raise
