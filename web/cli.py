"""``meterpipe web set-password --config FILE``: store the web page's password.

The password is read from stdin: twice, without echo, at a terminal; one line when
piped (``printf '%s\\n' "$PW" | meterpipe web set-password``). It is stored as a scrypt
hash with a random salt at ``[web] password_file`` (mode 0600, replaced atomically);
a running web server picks it up at once, and sessions of an older password end.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from meterpipe.common.files import write_atomic
from meterpipe.common.process import EXIT_CONFIG, EXIT_OK, base_parser, load_config_or_exit
from meterpipe.web.auth import hash_password, password_problem

EXIT_USAGE = 1


def write_password_file(path: Path, line: str) -> None:
    """Write ``line`` to ``path`` with mode 0600, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, line + "\n", 0o600)


def read_password() -> str | None:
    """The new password from stdin; None (after a message) when it is unusable."""
    if sys.stdin.isatty():
        import getpass

        first = getpass.getpass("new web password: ")
        if getpass.getpass("again: ") != first:
            print("the two passwords differ; nothing changed", file=sys.stderr)
            return None
    else:
        first = sys.stdin.readline().rstrip("\r\n")
    problem = password_problem(first)
    if problem is not None:
        print(f"{problem}; nothing changed", file=sys.stderr)
        return None
    return first


def set_password(argv: Sequence[str]) -> int:
    parser = base_parser("meterpipe web set-password",
                         "Set the password of the web page (read from stdin; stored as a scrypt hash).",
                         verbose=False)
    args = parser.parse_args(argv)
    config = load_config_or_exit(args.config)
    password = read_password()
    if password is None:
        return EXIT_USAGE
    path = config.web.password_file
    try:
        write_password_file(path, hash_password(password))
    except OSError as exc:
        print(f"cannot write {path}: {exc.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"web page password set ({path}, mode 0600); a running web server uses it at once")
    return EXIT_OK


USAGE = "usage: meterpipe web set-password [--config FILE]"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return EXIT_OK if args else EXIT_USAGE
    if args[0] == "set-password":
        return set_password(args[1:])
    print(f"unknown command {args[0]!r}\n{USAGE}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
