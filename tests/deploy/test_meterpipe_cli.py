"""The ``meterpipe`` dispatcher, ``meterpipe check-config``, load_config_or_exit and setup_logging.

The check-config cases run the real command in a subprocess and assert what a
person sees: exit code 2, one stderr line naming the setting, and no key (nor
a fragment of it) in any output, whichever case the key was written in.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from meterpipe.common.errors import fingerprint
from meterpipe.common.logs import setup_logging
from meterpipe.common.process import load_config_or_exit
from meterpipe.deploy import cli
from meterpipe.deploy.cli import COMMANDS, main

KEY = "8F3A0C11D2E4B5A6978899AABBCCDDEE"
AUTH = "C0FFEE00DEADBEEF0123456789ABCDEF"


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meterpipe.deploy.cli", *args],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("METERPIPE_")}
    base["METERPIPE_RUNTIME_DIR"] = str(tmp_path / "rt")
    return base


def _leaks(output: str, *secrets: str) -> list[str]:
    low = output.lower()
    return [s[i:i + 8] for s in secrets for i in range(len(s) - 7) if s[i:i + 8].lower() in low]


# (config text with {key} / {auth} placeholders, field the error names)
BAD_CONFIGS = {
    "key_env-unset": ('[[meters]]\nname = "house"\nport = "/dev/ttyUSB0"\n'
                      'key_env = "METERPIPE_TEST_NO_SUCH_VAR"\n', "meters.house.key_env"),
    "key-wrong-length": ('[[meters]]\nname = "house"\nport = "/dev/ttyUSB0"\nkey = "{key_short}"\n',
                         "meters.house.key"),
    "unknown-parity": ('[[meters]]\nname = "house"\nport = "/dev/ttyUSB0"\nparity = "M"\n'
                       'key = "{key}"\n', "meters.house.parity"),
    "duplicate-names": ('[[meters]]\nname = "house"\nport = "/dev/ttyUSB0"\nkey = "{key}"\n'
                        '[[meters]]\nname = "house"\nport = "/dev/ttyUSB1"\nkey = "{auth}"\n',
                        "meters[1].name"),
    "key_file-missing": ('[[meters]]\nname = "house"\nport = "/dev/ttyUSB0"\n'
                         'key_file = "keys/house.key"\nauth_key = "{auth}"\n', "meters.house.key_file"),
    "auth-without-key": ('[[meters]]\nname = "house"\nport = "/dev/ttyUSB0"\nauth_key = "{auth}"\n',
                         "meters.house.auth_key"),
    "unknown-setting": ('[[meters]]\nname = "house"\nport = "/dev/ttyUSB0"\nkey = "{key}"\n'
                        'baudrat = 9600\n', "meters.house.baudrat"),
}


@pytest.mark.parametrize("case", ["upper", "lower"])
@pytest.mark.parametrize("name", list(BAD_CONFIGS))
def test_check_config_rejects(tmp_path: Path, env: dict[str, str], name: str, case: str) -> None:
    text, field = BAD_CONFIGS[name]
    conv = str.upper if case == "upper" else str.lower
    path = tmp_path / "meterpipe.toml"
    path.write_text(text.format(key=conv(KEY), auth=conv(AUTH), key_short=conv(KEY[:30])))
    path.chmod(0o600)
    result = _run("check-config", "--config", str(path), env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"config error: {field}: ")
    assert result.stdout == ""
    assert _leaks(result.stderr + result.stdout, KEY, AUTH, KEY[:30]) == []
    if name == "unknown-setting":
        assert "did you mean baudrate?" in lines[0]


def test_check_config_ok_shows_fingerprints_not_keys(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "auth.key").write_text(AUTH.lower() + "\n")
    (tmp_path / "auth.key").chmod(0o600)
    path = tmp_path / "meterpipe.toml"
    path.write_text(textwrap.dedent("""\
        [[meters]]
        name = "house"
        port = "/dev/ttyUSB0"
        parity = "E"
        key_env = "HOUSE_KEY"
        auth_key_file = "auth.key"
        model = "e450"
        [[meters]]
        name = "shed"
        port = "socket://127.0.0.1:4001"
        """))
    path.chmod(0o600)
    result = _run("check-config", "--config", str(path), env={**env, "HOUSE_KEY": KEY})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout.splitlines()
    assert out[0] == f"config OK: {path}: 2 meter(s)"
    assert out[1].startswith("meter house: port /dev/ttyUSB0 2400 8E1, link auto, model e450")
    assert f"key: set (fingerprint {fingerprint(bytes.fromhex(KEY))})" in out[1]
    assert f"auth key: set (fingerprint {fingerprint(bytes.fromhex(AUTH))})" in out[1]
    assert "key: none" in out[2]
    assert out[3] == f"endpoints: frames ipc://{tmp_path}/rt/frames, readings ipc://{tmp_path}/rt/readings"
    assert _leaks(result.stdout, KEY, AUTH) == []


def test_check_config_prints_warnings(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "meterpipe.toml"
    path.write_text(f'[[meters]]\nname = "m"\nport = "/dev/x"\nkey = "{KEY}"\n')
    path.chmod(0o644)
    result = _run("check-config", "--config", str(path), env=env)
    assert result.returncode == 0
    assert result.stderr.startswith("config warning: config file ")
    assert "chmod 600" in result.stderr
    assert _leaks(result.stderr + result.stdout, KEY) == []


def test_check_config_uses_environment_variable(tmp_path: Path, env: dict[str, str]) -> None:
    missing = tmp_path / "absent.toml"
    result = _run("check-config", env={**env, "METERPIPE_CONFIG": str(missing)})
    assert result.returncode == 2
    assert result.stderr.strip() == (f"config error: {missing}: config file not found; "
                                     "pass --config FILE or set $METERPIPE_CONFIG")


# --- the dispatcher ---------------------------------------------------------------


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, command in COMMANDS.items():
        assert f"  {name}" in out and command.description in out
    assert main(["-h"]) == 0


def test_no_arguments_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert capsys.readouterr().err.startswith("usage: meterpipe <command>")


def test_unknown_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chek-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: meterpipe")
    assert "unknown command 'chek-config' (did you mean check-config?)" in err


def test_every_target_is_module_colon_function() -> None:
    for command in COMMANDS.values():
        module, sep, function = command.target.partition(":")
        assert sep and module.startswith("meterpipe.") and function.isidentifier()


@pytest.fixture
def fake_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A throw-away package of subcommand modules on sys.path."""
    (tmp_path / "mp_fake_cmds.py").write_text(textwrap.dedent("""\
        calls = []
        def main(argv):
            calls.append(list(argv))
            return 7
        def quiet(argv):
            return None
        def exits(argv):
            raise SystemExit(3)
        def exits_text(argv):
            raise SystemExit("fatal: gone")
        not_callable = 5
        """))
    (tmp_path / "mp_fake_needs_dep.py").write_text("import mp_no_such_dependency_xyz\ndef main(argv): return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    targets = {
        "fake": "mp_fake_cmds:main", "quiet": "mp_fake_cmds:quiet", "exits": "mp_fake_cmds:exits",
        "exits-text": "mp_fake_cmds:exits_text", "nofunc": "mp_fake_cmds:missing",
        "notcallable": "mp_fake_cmds:not_callable", "nomodule": "meterpipe.common.no_such_module:main",
        "nopackage": "meterpipe_no_such_pkg.cli:main", "needsdep": "mp_fake_needs_dep:main",
    }
    for name, target in targets.items():
        monkeypatch.setitem(COMMANDS, name, cli.Command(target, "test"))
    yield tmp_path
    for mod in ("mp_fake_cmds", "mp_fake_needs_dep"):
        sys.modules.pop(mod, None)


def test_dispatch_passes_the_remaining_argv(fake_commands: Path) -> None:
    assert main(["fake", "--config", "x.toml", "-v"]) == 7
    assert sys.modules["mp_fake_cmds"].calls == [["--config", "x.toml", "-v"]]
    assert main(["quiet"]) == 0
    assert main(["exits"]) == 3


def test_dispatch_system_exit_with_text(fake_commands: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["exits-text"]) == 1
    assert capsys.readouterr().err == "fatal: gone\n"


@pytest.mark.parametrize("name", ["nofunc", "notcallable", "nomodule", "nopackage"])
def test_missing_subcommand_module(fake_commands: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([name]) == 2
    assert capsys.readouterr().err == f"meterpipe {name}: not available in this build\n"


def test_missing_dependency_is_named(fake_commands: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["needsdep"]) == 2
    err = capsys.readouterr().err
    assert err == "meterpipe needsdep: needs the Python module mp_no_such_dependency_xyz, which is not installed\n"


def test_help_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["help", "check-config"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: meterpipe check-config") and "METERPIPE_CONFIG" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("meterpipe ")


# --- startup and logging ----------------------------------------------------------


def test_load_or_exit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("METERPIPE_RUNTIME_DIR", str(tmp_path / "rt"))
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[[meters]]\nname = "m"\nport = "/dev/x"\nkey = "{KEY[:31]}"\n')
    with pytest.raises(SystemExit) as info:
        load_config_or_exit(str(bad))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("config error: meters.m.key: ") and err.count("\n") == 1
    assert _leaks(err, KEY[:31]) == []
    good = tmp_path / "good.toml"
    good.write_text(f'[[meters]]\nname = "m"\nport = "/dev/x"\nkey = "{KEY}"\n')
    good.chmod(0o604)
    with caplog.at_level(logging.WARNING):
        config = load_config_or_exit(str(good))
    assert config.meters[0].key == bytes.fromhex(KEY)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "readable by group or others" in caplog.records[0].getMessage()


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root_logger")
def test_setup_logging(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging()
    setup_logging(name="reader house")  # replaces, does not add a second handler
    log = logging.getLogger("meterpipe.test")
    log.debug("hidden %s", 1)
    log.info("meter %s up", "house")
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    assert out[0].endswith(" reader house INFO meterpipe.test: meter house up")
    setup_logging(True)
    log.debug("shown %d%%", 5)
    (line,) = capsys.readouterr().out.splitlines()
    assert line.endswith(" DEBUG meterpipe.test: shown 5%")
