"""The supervisord that runs meterpipe, driven over its control socket: states, and applying a Plan.

``meterpipe run`` (and the demo) start supervisord with a unix control socket at
``<runtime dir>/supervisor.sock`` (deploy/supervisord.conf); every program it starts
finds that directory in ``$METERPIPE_RUNTIME_DIR`` (:func:`runtime_dir_from_env`).
:class:`Supervisor` speaks supervisord's XML-RPC there, with a timeout on every call
so that a hung supervisord cannot hang the web page that asks.

:meth:`Supervisor.apply` carries out a :class:`~meterpipe.deploy.apply.Plan`: it
rewrites ``programs.conf``, has supervisord re-read it, and acts on the plan's
programs only. supervisord's own "changed" list also names the publishers whose
``autostart`` flipped; those are started or stopped as the plan says, never
re-created, so nothing the plan does not name restarts.
"""

from __future__ import annotations

import http.client
import os
import socket
import time
import xmlrpc.client
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import Faults, SupervisorTransport

from meterpipe.common.errors import MeterpipeError
from meterpipe.deploy.apply import DECODER, Plan
from meterpipe.deploy.supervise import write_programs

SOCKET_NAME = "supervisor.sock"
RUNTIME_ENV = "METERPIPE_RUNTIME_DIR"
POLL_S = 0.2
STOP_BUDGET_S = 15.0  # the longest stopwaitsecs (10 s) and some: supervisord SIGKILLs by then

BAD_NAME: int = Faults.BAD_NAME
ALREADY_STARTED: int = Faults.ALREADY_STARTED
NOT_RUNNING: int = Faults.NOT_RUNNING
ALREADY_ADDED: int = Faults.ALREADY_ADDED

# supervisord's process states (supervisor/states.py), as getProcessInfo names them.
UP = frozenset({"STARTING", "RUNNING", "BACKOFF", "STOPPING"})  # a process is there, or about to be
DOWN = frozenset({"STOPPED", "EXITED", "FATAL", "UNKNOWN"})


class ControlError(MeterpipeError):
    """supervisord cannot be reached, or refused the new program table."""

    kind = "control"


@dataclass(frozen=True, slots=True)
class ProcessState:
    name: str  # the program ("decoder", "reader-house"); "group:name" for a program in a group
    state: str  # RUNNING, STARTING, BACKOFF, STOPPED, EXITED, FATAL ...
    pid: int  # 0 when not running
    description: str  # supervisord's own words: "pid 12, uptime 0:01:02", "Exited too quickly ..."


def runtime_dir_from_env(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The runtime directory of the supervisord that started us (``$METERPIPE_RUNTIME_DIR``), if any."""
    value = environ.get(RUNTIME_ENV, "")
    return Path(value) if value else None


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket, with a timeout on connect and every read."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Supervisor:
    """The supervisord of runtime directory ``rundir``, asked over ``rundir/supervisor.sock``."""

    def __init__(self, rundir: Path, timeout: float = 10.0) -> None:
        self.rundir = Path(rundir)
        self.timeout = timeout
        self.socket = self.rundir / SOCKET_NAME
        path = str(self.socket)
        self._transport = SupervisorTransport(None, None, "unix://" + path)
        # supervisor's own unix connection has no timeout: a hung supervisord would hang us
        self._transport._get_connection = lambda: _UnixConnection(path, timeout)
        self._proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=self._transport)

    # --- the wire -------------------------------------------------------------------

    def _call(self, method: str, *args: Any) -> Any:
        """One XML-RPC call; xmlrpc.client.Fault passes through (the caller decides), anything
        else that means "no supervisord there" becomes ControlError."""
        try:
            return getattr(self._proxy.supervisor, method)(*args)
        except xmlrpc.client.Fault:
            raise
        except (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError,
                xmlrpc.client.ResponseError) as exc:
            self._transport.close()
            raise ControlError(self._unreachable(exc)) from exc

    def _unreachable(self, exc: Exception) -> str:
        if isinstance(exc, TimeoutError):
            why = f"no answer within {self.timeout:g} s"
        elif isinstance(exc, FileNotFoundError):
            why = "no control socket"
        elif isinstance(exc, ConnectionRefusedError):
            why = "nothing listens on the control socket"
        elif isinstance(exc, OSError):
            why = exc.strerror or type(exc).__name__
        else:
            why = type(exc).__name__
        return (f"meterpipe is not running under supervisord ({why} at {self.socket}); "
                "start it with 'meterpipe run', or restart it to apply the new settings")

    def _try(self, method: str, *args: Any, ok: Iterable[int] = ()) -> str | None:
        """Call ``method``; None when it worked or failed with a fault in ``ok``, else the fault's text."""
        try:
            self._call(method, *args)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode in set(ok):
                return None
            return str(fault.faultString)
        return None

    # --- asking ---------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection to supervisord (the public calls do when they return)."""
        self._transport.close()

    def states(self) -> list[ProcessState]:
        """Every process supervisord knows, in its order."""
        try:
            return self._states()
        finally:
            self.close()

    def _states(self) -> list[ProcessState]:
        try:
            infos = self._call("getAllProcessInfo")
        except xmlrpc.client.Fault as fault:
            raise ControlError(f"supervisord did not list its processes: {fault.faultString}") from fault
        found = []
        for info in infos:
            name, group = str(info["name"]), str(info["group"])
            found.append(ProcessState(name if group == name else f"{group}:{name}", str(info["statename"]),
                                      int(info["pid"]), str(info["description"])))
        return found

    def _state_map(self) -> dict[str, ProcessState]:
        return {s.name: s for s in self._states()}

    def _wait(self, names: Iterable[str], done: Callable[[ProcessState | None], bool],
              budget: float) -> dict[str, ProcessState | None]:
        """Poll until ``done`` holds for every one of ``names`` or ``budget`` seconds pass; their last states."""
        wanted = list(names)
        deadline = time.monotonic() + budget
        while True:
            states = self._state_map()
            last = {n: states.get(n) for n in wanted}
            if all(done(s) for s in last.values()) or time.monotonic() >= deadline:
                return last
            time.sleep(POLL_S)

    def pause(self, name: str) -> bool:
        """Stop one program for a while (the settings page tests its meter on the same port);
        True when it was running, so :meth:`resume` should start it again."""
        try:
            running = any(s.name == name and s.state in ("RUNNING", "STARTING", "BACKOFF") for s in self._states())
            if running:
                self._try("stopProcess", name, True, ok=(NOT_RUNNING,))
            return running
        finally:
            self.close()

    def resume(self, name: str) -> str | None:
        """Start a paused program again; None, or why it did not start."""
        try:
            return self._try("startProcess", name, False, ok=(ALREADY_STARTED,))
        finally:
            self.close()

    # --- applying -------------------------------------------------------------------

    def apply(self, plan: Plan, programs_text: str) -> list[str]:
        """Write ``programs_text`` as ``programs.conf``, have supervisord re-read it, and carry out
        ``plan``. Returns one line per thing done (or not done, and why). ControlError when
        supervisord cannot be reached or refuses the new table (nothing started or stopped then)."""
        try:
            return self._apply(plan, programs_text)
        finally:
            self.close()

    def _apply(self, plan: Plan, programs_text: str) -> list[str]:
        try:
            self._call("getState")  # reachable? before anything is written
        except xmlrpc.client.Fault as fault:  # shutting down
            raise ControlError(f"supervisord cannot take changes now: {fault.faultString}") from fault
        path = self.rundir / "programs.conf"
        try:
            previous = path.read_text() if path.exists() else None
            write_programs(self.rundir, programs_text)
        except OSError as exc:
            raise ControlError(f"cannot write {path}: {exc.strerror}") from exc
        try:
            added, _changed, _removed = self._call("reloadConfig")[0]
        except xmlrpc.client.Fault as fault:
            if previous is not None:  # the table supervisord runs, for whoever reads it next
                write_programs(self.rundir, previous)
            raise ControlError(f"supervisord refused the new program table: {fault.faultString}") from fault
        lines: list[str] = []
        failed: set[str] = set()  # names whose step supervisord refused: a line says so already
        self._stop([*plan.remove, *plan.stop, *plan.restart], lines, failed)
        for name in plan.remove:
            problem = self._try("removeProcessGroup", name, ok=(BAD_NAME,))
            lines.append(f"could not remove {name}: {problem}" if problem else f"stopped and removed {name}")
        lines += [f"stopped {name}" for name in plan.stop if name not in failed]
        if plan.hup_decoder:
            lines.append(self._hup())
        for name in plan.add:
            # Not in supervisord's "added" list: already known (an earlier apply stopped half-way).
            problem = self._try("addProcessGroup", name, ok=(ALREADY_ADDED,)) if name in added else None
            if problem:
                lines.append(f"could not add {name}: {problem}")
                failed.add(name)
        for name in (*plan.add, *plan.restart, *plan.start):
            # an added program's autostart would start it on supervisord's next turn; starting it
            # now lets _settle tell "not started yet" from "stopped"
            problem = self._try("startProcess", name, False, ok=(ALREADY_STARTED,)) if name not in failed else None
            if problem:
                lines.append(f"could not start {name}: {problem}")
                failed.add(name)
        self._settle(plan, lines, failed)
        return lines

    def _stop(self, names: list[str], lines: list[str], failed: set[str]) -> None:
        """Stop ``names`` (the last to start first) and wait until they are down."""
        for name in reversed(names):
            problem = self._try("stopProcess", name, False, ok=(NOT_RUNNING, BAD_NAME))
            if problem:
                lines.append(f"could not stop {name}: {problem}")
                failed.add(name)
        if names:
            left = self._wait(names, lambda s: s is None or s.state in DOWN, STOP_BUDGET_S)
            for name, state in left.items():
                if state is not None and state.state not in DOWN:
                    lines.append(f"{name} did not stop: still {state.state}")
                    failed.add(name)

    def _hup(self) -> str:
        state = self._wait([DECODER], lambda s: s is None or s.state != "STARTING", self.timeout)[DECODER]
        if state is None or state.state != "RUNNING":
            shown = state.state if state is not None else "not configured"
            return f"decoder not running ({shown}): it reads the new meters when it starts"
        problem = self._try("signalProcess", DECODER, "HUP", ok=(NOT_RUNNING,))
        return f"could not signal the decoder: {problem}" if problem else "the decoder re-reads its meters"

    def _settle(self, plan: Plan, lines: list[str], failed: set[str]) -> None:
        """Wait (at most ``timeout`` seconds) for what was started to run; a line for each."""
        verbs = {**dict.fromkeys(plan.add, "started"), **dict.fromkeys(plan.start, "started"),
                 **dict.fromkeys(plan.restart, "restarted")}
        verbs = {name: verb for name, verb in verbs.items() if name not in failed}
        if not verbs:
            return
        last = self._wait(verbs, lambda s: s is not None and s.state not in ("STARTING", "BACKOFF"),
                          self.timeout)
        for name, verb in verbs.items():
            state = last[name]
            if state is not None and state.state == "RUNNING":
                lines.append(f"{verb} {name}")
            elif state is None:
                lines.append(f"{name} is not in supervisord's program table")
            elif state.state in ("STARTING", "BACKOFF"):
                lines.append(f"{name} is still starting ({state.state})")
            else:
                lines.append(f"{name} did not start: {state.state} {state.description}".rstrip())
