"""The ``meterpipe`` command: a dispatcher to the subcommands.

Each subcommand is a ``main(argv) -> int`` in its own module, named here as a
``"module:function"`` string and imported only when it runs, so that
``meterpipe tap`` does not pay for the decoder's imports and a build without
some module still runs the others.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

EXIT_USAGE = 2


class Command(NamedTuple):
    target: str  # "module:function"
    description: str


COMMANDS: Mapping[str, Command] = {
    "run": Command("meterpipe.deploy.supervise:run_main",
                   "start the whole pipeline (readers, decoder, publishers) under supervisord"),
    "demo": Command("meterpipe.deploy.demo:main",
                    "run the pipeline against simulated meters, no hardware needed"),
    "status": Command("meterpipe.deploy.supervise:status_main",
                      "show the processes of a running pipeline and their state"),
    "stop": Command("meterpipe.deploy.supervise:stop_main",
                    "stop a pipeline started with 'meterpipe run' (a demo stops with Ctrl-C)"),
    "tap": Command("meterpipe.publishers.tap:main",
                   "print the readings and status messages as they are published"),
    "decode": Command("meterpipe.decoder.cli:main",
                      "decode captured frames (hex or file) and print the readings"),
    "simulate": Command("meterpipe.simulator.main:main",
                        "play a simulated meter's pushes onto a serial port or pty"),
    "keys": Command("meterpipe.deploy.keys:main",
                    "CurveZMQ key pairs for readers on other hosts (secret keys never printed)"),
    "history": Command("meterpipe.publishers.history.cli:main",
                       "the history database: import the CSV publisher's files"),
    "web": Command("meterpipe.web.cli:main",
                   "the local web page: set the owner's password"),
    "check-config": Command("meterpipe.deploy.check_config:main",
                            "validate the config file and summarise it (keys never shown)"),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: meterpipe <command> [options]",
        "",
        "Reads smart meters through their customer port, decodes their pushes and",
        "delivers the readings to MQTT, CSV files, the journal, a history database",
        "and a local web page.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {cmd.description}" for name, cmd in COMMANDS.items()]
    lines += [
        "",
        "Run 'meterpipe <command> --help' for the options of a command.",
        "The config file is --config FILE, else $METERPIPE_CONFIG, else ./meterpipe.toml.",
    ]
    return "\n".join(lines)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("meterpipe")
    except PackageNotFoundError:
        return "unknown"


def resolve(name: str) -> Callable[[list[str]], int | None] | str:
    """The function behind a subcommand, or a one-line reason it is not available."""
    module_name, _, function = COMMANDS[name].target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            return f"meterpipe {name}: not available in this build"
        return f"meterpipe {name}: needs the Python module {missing}, which is not installed"
    func = getattr(module, function, None)
    if not callable(func):
        return f"meterpipe {name}: not available in this build"
    return func  # type: ignore[no-any-return]  # getattr on a module is Any


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(usage(), file=sys.stderr)
        return EXIT_USAGE
    name, rest = args[0], args[1:]
    if name in ("-h", "--help", "help") and not rest:
        print(usage())
        return 0
    if name == "help":  # meterpipe help tap  ==  meterpipe tap --help
        name, rest = rest[0], ["--help"]
    if name == "--version":
        print(f"meterpipe {_version()}")
        return 0
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        print(usage(), file=sys.stderr)
        print(f"\nmeterpipe: unknown command {name!r}{hint}", file=sys.stderr)
        return EXIT_USAGE
    func = resolve(name)
    if isinstance(func, str):
        print(func, file=sys.stderr)
        return EXIT_USAGE
    try:
        result = func(rest)
    except SystemExit as exc:  # argparse --help / errors inside the subcommand
        code = exc.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    return 0 if result is None else int(result)


if __name__ == "__main__":
    sys.exit(main())
