"""``meterpipe keys``: CurveZMQ key pairs for readers on other hosts.

``meterpipe keys server --dir DIR`` writes the decoder's pair, ``meterpipe keys
reader NAME --dir DIR`` a reader's pair: ``NAME.key`` (public, mode 0644) and
``NAME.key_secret`` (both keys, mode 0600), ZeroMQ certificate files as
``zmq.auth.create_certificates`` writes them, so ``zmq.auth`` loads them. Existing
files are never overwritten. It prints where the files went and the config lines
that use them; it never prints a secret key (the public key is fine to show and
to compare between hosts).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import zmq.auth

from meterpipe.common.errors import MeterpipeError

SERVER_NAME = "server"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class KeyFileError(MeterpipeError):
    """Key files could not be written; the message says where and why."""


def key_pair(directory: Path, name: str) -> tuple[Path, Path]:
    """Write ``name.key`` and ``name.key_secret`` into ``directory`` (made 0700 if missing).

    The pair is made in a private temporary folder beside the targets and moved
    into place, so the secret file is never readable by others, not even briefly,
    and an existing file is never replaced. Returns (public, secret) paths.
    """
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise KeyFileError(f"{path} exists already; remove it first or choose another --dir or name")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=directory, prefix=".keys-") as tmp:
            made_public, made_secret = (Path(p) for p in zmq.auth.create_certificates(tmp, name))
            os.chmod(made_secret, 0o600)
            os.chmod(made_public, 0o644)
            os.link(made_secret, secret)  # link() fails instead of replacing a file made meanwhile
            try:
                os.link(made_public, public)
            except OSError:
                secret.unlink()
                raise
    except OSError as exc:
        raise KeyFileError(f"cannot write key files in {directory}: {exc.strerror or exc}") from exc
    return public, secret


def toml_text(path: Path) -> str:
    """``path`` as a TOML basic string (JSON's escaping is valid TOML)."""
    return json.dumps(str(path))


def _public_key(path: Path) -> str:
    return zmq.auth.load_certificate(path)[0].decode("ascii")


def server_main(directory: Path) -> list[str]:
    public, secret = key_pair(directory, SERVER_NAME)
    readers = directory / "readers"
    readers.mkdir(mode=0o700, exist_ok=True)
    return [
        "CurveZMQ server key pair for the decoder:",
        f"  public key file  {public}   (copy it to every reader host)",
        f"  secret key file  {secret}   (mode 0600; keep it on this host)",
        f"  public key       {_public_key(public)}",
        "",
        "In the decoder's meterpipe.toml:",
        "  [endpoints]",
        '  frames = "tcp://0.0.0.0:5555"          # or this host\'s LAN address',
        f"  curve_server_secret = {toml_text(secret)}",
        f"  curve_authorized_dir = {toml_text(readers)}   # each reader's public .key file goes here",
        "",
        "Then run `meterpipe keys reader NAME` for each reader host.",
    ]


def reader_main(directory: Path, name: str) -> list[str]:
    public, secret = key_pair(directory, name)
    return [
        f"CurveZMQ key pair for reader {name}:",
        f"  public key file  {public}   (copy it into the decoder's curve_authorized_dir)",
        f"  secret key file  {secret}   (mode 0600; keep it on the reader host)",
        f"  public key       {_public_key(public)}",
        "",
        "In the reader host's meterpipe.toml:",
        "  [endpoints]",
        '  frames = "tcp://DECODER-HOST:5555"',
        '  curve_server_public = "/path/to/server.key"   # the decoder\'s public key file',
        f"  curve_client_secret = {toml_text(secret)}",
        "",
        "Restart the decoder after adding the public key file to its curve_authorized_dir.",
    ]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meterpipe keys",
        description="Make CurveZMQ key pairs for readers on other hosts (secret keys are never printed).",
    )
    sub = parser.add_subparsers(dest="what", required=True, metavar="{server,reader}")
    server = sub.add_parser("server", help="the decoder's key pair (server.key, server.key_secret)")
    server.add_argument("--dir", type=Path, required=True, help="folder for the key files (made 0700)")
    reader = sub.add_parser("reader", help="a reader's key pair (NAME.key, NAME.key_secret)")
    reader.add_argument("name", help="reader name: letters, digits, _ . - (the file name)")
    reader.add_argument("--dir", type=Path, required=True, help="folder for the key files (made 0700)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    directory: Path = args.dir.expanduser()
    try:
        if args.what == "server":
            lines = server_main(directory)
        else:
            if not _NAME.match(args.name) or args.name == SERVER_NAME:
                print(f"meterpipe keys: reader name {args.name!r} must be letters, digits, _ . - "
                      f"(at most 64) and not {SERVER_NAME!r}", file=sys.stderr)
                return EXIT_USAGE
            lines = reader_main(directory, args.name)
    except KeyFileError as exc:
        print(f"meterpipe keys: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print("\n".join(lines))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
