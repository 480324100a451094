"""``meterpipe decode``: decode a capture pasted from a meter, print JSON.

    meterpipe decode [--key HEX] [--auth-key HEX] [--format auto|hdlc|mbus|apdu]
                     [--model MODEL] [--binary] [FILE|-]

Input is hex (whitespace, line breaks, ``0x`` prefixes, ``:`` and ``,``
allowed) or raw bytes with ``--binary``. One JSON object per decoded push goes
to stdout; one line ``error: <kind>: <what happened and what to check>`` per
rejected frame or push goes to stderr. Exit 0 when everything decoded, 1 when
anything was rejected, 2 on usage errors. Keys can also come from the
environment (METERPIPE_KEY, METERPIPE_AUTH_KEY) so they stay out of ``ps``;
they are never echoed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import BinaryIO

from meterpipe.common import config_fields
from meterpipe.common.errors import ConfigError
from meterpipe.common.schema import LinkLayer
from meterpipe.common.values import Push
from meterpipe.decoder.models import MODELS
from meterpipe.decoder.session import MeterDecoder, Outcome

_HEX_NOISE = re.compile(r"0x|[\s:,]", re.IGNORECASE)
APDU_STARTS = (0x0F, 0xDB, 0xDF, 0xE0)


class UsageError(Exception):
    """Bad command-line input: exit code 2."""


def parse_key(text: str | None, option: str) -> bytes | None:
    """The config's key parser, its ConfigError turned into a usage error (never echoing the key)."""
    if text is None or text == "":
        return None
    try:
        return config_fields.parse_key(text, option, "the value given")
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc


def parse_input(raw: bytes, binary: bool) -> bytes:
    if binary:
        return raw
    if raw.lstrip().startswith(b"/"):  # a P1 telegram is text already
        telegram = raw.lstrip()
        # DSMR lines end in CR LF and the CRC covers them: restore them when a paste lost them
        return telegram if b"\r\n" in telegram else telegram.replace(b"\n", b"\r\n")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise UsageError("input is not hex text: use --binary for raw bytes") from exc
    digits = _HEX_NOISE.sub("", text)
    if len(digits) % 2 or not re.fullmatch(r"[0-9a-fA-F]*", digits):
        raise UsageError("input is not valid hex (odd length or other characters): use --binary for raw bytes")
    return bytes.fromhex(digits)


def _link_of(data: bytes, fmt: str) -> LinkLayer:
    if fmt != "auto":
        return LinkLayer(fmt)
    first = next((b for b in data if b not in (0x00, 0xFF, 0x0D, 0x0A)), None)
    if first in APDU_STARTS:
        return LinkLayer.APDU
    if first == ord("/"):
        return LinkLayer.DSMR
    return LinkLayer.AUTO


def decode_bytes(decoder: MeterDecoder, data: bytes, link: LinkLayer) -> list[Outcome]:
    if link is LinkLayer.APDU:
        return decoder.feed_apdu(data)
    if link is LinkLayer.DSMR and not data.rstrip(b"\r\n").endswith(b"!") and b"!" in data:
        data = data if data.endswith(b"\n") else data + b"\r\n"  # a pasted telegram may lack its last line end
    out = decoder.feed(data)
    if not out and data:
        from meterpipe.common.errors import FrameError

        out.append(
            FrameError(
                f"no complete frame in {len(data)} bytes: the capture may be cut short, "
                "or not HDLC/M-Bus (try --format apdu for a bare APDU)"
            )
        )
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="meterpipe decode",
        description="Decode a capture (DLMS/COSEM in HDLC or M-Bus frames, a bare APDU, or a DSMR P1 telegram) "
        "into JSON readings, one object per push.",
    )
    p.add_argument("--key", help="encryption key, 32 hex digits (or set METERPIPE_KEY)")
    p.add_argument("--auth-key", help="authentication key, 32 hex digits (or set METERPIPE_AUTH_KEY)")
    p.add_argument("--format", choices=["auto", "hdlc", "mbus", "apdu", "dsmr"], default="auto")
    p.add_argument("--model", choices=MODELS, help="meter model, for pushes that carry no scalers")
    p.add_argument("--binary", action="store_true", help="input is raw bytes, not hex")
    p.add_argument("file", nargs="?", default="-", help="capture file, or - for standard input")
    return p


def _read(path: str) -> bytes:
    stream: BinaryIO
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as stream:
        return stream.read()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="warning: %(message)s")
    try:
        key = parse_key(args.key or os.environ.get("METERPIPE_KEY"), "--key")
        auth_key = parse_key(args.auth_key or os.environ.get("METERPIPE_AUTH_KEY"), "--auth-key")
        data = parse_input(_read(args.file), args.binary)
    except UsageError as exc:
        print(f"meterpipe decode: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"meterpipe decode: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    link = _link_of(data, args.format)
    decoder = MeterDecoder("capture", key=key, auth_key=auth_key, model=args.model, link=link)
    failed = False
    try:
        for outcome in decode_bytes(decoder, data, link):
            if isinstance(outcome, Push):
                print(json.dumps(outcome.as_json(), ensure_ascii=False), flush=True)
            else:
                failed = True
                print(f"error: {outcome.kind}: {outcome.message}", file=sys.stderr)
    except BrokenPipeError:  # `meterpipe decode ... | head`
        sys.stderr.close()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
