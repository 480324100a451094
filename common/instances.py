"""One meterpipe instance per runtime directory: the lock that ``meterpipe run`` and the demo hold.

``<runtime dir>/meterpipe.lock`` is ``flock``-ed by the process that starts
supervisord for that directory and stays locked for as long as that supervisord
lives (the descriptor survives the exec; see :data:`LOCK_FD`). The file holds
the holder's pid. Anyone may ask who holds it (:func:`holder_pid`) without
changing it, so a refused second instance touches none of the first one's files.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from meterpipe.common.endpoints import make_private_dir

LOCK_NAME = "meterpipe.lock"
# supervisord closes every descriptor from 5 up when it reloads (supervisorctl
# reload, SIGHUP), and from 3 up in the programs it starts: the lock lives on 4.
LOCK_FD = 4
_TRIES = 10  # a holder_pid() probe holds a shared lock for microseconds: try again for half a second
_PAUSE_S = 0.05


def take_lock(rundir: Path) -> int | None:
    """The descriptor of ``rundir``'s instance lock, taken; None when another process holds it."""
    make_private_dir(rundir)
    fd = os.open(rundir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    for attempt in range(_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            if attempt == _TRIES - 1:
                os.close(fd)
                return None
            time.sleep(_PAUSE_S)
        else:
            break
    os.set_inheritable(fd, True)
    return fd


def record_holder(fd: int, pid: int) -> None:
    """Write the pid that holds the lock (the supervisord) into the lock file."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{pid}\n".encode(), 0)


def keep_across_exec(fd: int) -> int:
    """Move the lock to :data:`LOCK_FD`, which neither exec nor a supervisord reload closes."""
    if fd != LOCK_FD:
        os.dup2(fd, LOCK_FD)  # inheritable by default
        os.close(fd)
    return LOCK_FD


def holder_pid(rundir: Path) -> int | None:
    """The pid recorded by the process that holds ``rundir``'s lock (0 while it has not
    written it yet), or None when nobody holds the lock."""
    path = rundir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else 0
        return None  # we got it: nobody holds it (closing the descriptor lets it go)
    finally:
        os.close(fd)
